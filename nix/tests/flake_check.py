#!/usr/bin/env python3
"""Check the flake's wiring from the stubbed evaluation (flake-stub.nix).

Usage: flake_check.py STUB_JSON
  STUB_JSON: nix-instantiate --eval --strict --json nix/tests/flake-stub.nix

Per system: every binary crate is a crane buildPackage for the system's musl
target with +crt-static; the native target from the native package set with
musl-gcc for C (crane's cross-musl way: no cross GCC), the other architecture
from the nixpkgs cross set; the agent with the release-small profile and its
own dependency build, every other binary sharing one release dependency
build; the release source holds no k8s/ or docs/; x86_64-linux also has the
aarch64 binaries and images; images copy the static binaries of their own
architecture; `crds` runs the generator; `default` joins all binaries; the
checks run clippy -D warnings, nextest and fmt on the host target with one
shared dependency build (nextest with what the tests read: k8s/, docs/,
scripts/, kubectl, python3, curl, shellcheck), the CRD staleness check, the
compose check and the static check; the dev shell has the required tools and
builds nothing of the project.
"""

import glob
import json
import os
import sys
import tomllib

TARGETS = {
    "x86_64": ("x86_64-unknown-linux-musl", "musl64", "amd64"),
    "aarch64": ("aarch64-unknown-linux-musl", "aarch64-multiplatform-musl", "arm64"),
}
IMAGES = {"controller": "apollo-controller", "controller-alias": "apollo-controller",
          "gateway": "apollo-gateway", "agent": "apollo-agent"}
PROFILES = {"apollo-agent": "release-small"}
SHELL_TOOLS = ["cargo-nextest", "kind", "kubectl", "kustomize", "jq", "curl", "openssl",
               "docker-compose", "shellcheck"]


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok


def binaries():
    found = []
    for manifest in sorted(glob.glob("crates/*/Cargo.toml") + glob.glob("dev/*/Cargo.toml")):
        with open(manifest, "rb") as f:
            toml = tomllib.load(f)
        if toml.get("bin") or os.path.exists(os.path.join(os.path.dirname(manifest), "src/main.rs")):
            found.append(toml["package"]["name"])
    return found


def pkgs_name(system, arch):
    """The package set a target is built with: native for the machine's own architecture."""
    return system if system.split("-")[0] == arch else f"{system}/pkgsCross.{TARGETS[arch][1]}"


def check_static(c, pkgs, name, arch, system, suffix=""):
    target, cross, _ = TARGETS[arch]
    p = pkgs.get(name + suffix)
    where = f"{system} {name}{suffix}"
    if not c.check(isinstance(p, dict), f"{where}: package exists"):
        return None
    env = target.upper().replace("-", "_")
    cc_env = "CC_" + target.replace("-", "_")
    native = pkgs_name(system, arch) == system
    profile = PROFILES.get(name, "release")
    c.check(p["_kind"] == "crane-buildPackage", f"{where}: crane buildPackage")
    c.check(p["_pkgs"] == pkgs_name(system, arch), f"{where}: crane lib from {pkgs_name(system, arch)}")
    if native:
        c.check(p.get(cc_env) == "/stub/package/musl.dev/bin/musl-gcc",
                f"{where}: native build compiles C with musl-gcc ({cc_env})")
    else:
        c.check(cc_env not in p, f"{where}: cross build leaves CC to crane's cross wiring")
    c.check(p.get("CARGO_PROFILE") == profile, f"{where}: {profile} profile")
    c.check(p.get("CARGO_BUILD_TARGET") == target, f"{where}: target {target}")
    c.check("+crt-static" in p.get(f"CARGO_TARGET_{env}_RUSTFLAGS", ""), f"{where}: +crt-static")
    c.check(f"--package {name}" in p.get("cargoExtraArgs", "") and "--locked" in p.get("cargoExtraArgs", ""),
            f"{where}: builds --locked --package {name}")
    c.check(p.get("doCheck") is False and p.get("strictDeps") is True, f"{where}: no tests in the static build, strictDeps")
    c.check(p.get("meta", {}).get("mainProgram") == name, f"{where}: mainProgram")
    c.check(p.get("_toolchain") == "/stub/rust-toolchain/1.95.0", f"{where}: pinned toolchain")
    src = p.get("src", "")
    c.check('"crates"' in src and '"dev"' in src and all(d not in src for d in ("k8s", "docs", "scripts")),
            f"{where}: source is crates/ and dev/, not k8s/, docs/ or scripts/")
    deps = f"apollo-{target}" + ("" if profile == "release" else f"-{profile}")
    c.check(p.get("cargoArtifacts", "") == f"/stub/crane-buildDepsOnly/{deps}@{pkgs_name(system, arch)}",
            f"{where}: uses the shared {deps} dependency build")
    return p.get("cargoArtifacts")


def check_images(c, img_pkg, arch, system, suffix=""):
    target, cross, docker_arch = TARGETS[arch]
    where = f"{system} images{suffix}"
    if not c.check(isinstance(img_pkg, dict) and "_images" in img_pkg, f"{where}: package with images"):
        return
    images = img_pkg["_images"]
    c.check(set(images) == set(IMAGES), f"{where}: images {sorted(IMAGES)}")
    for key, binary in IMAGES.items():
        i = images.get(key, {})
        src = f"/stub/crane-buildPackage/{binary}@{pkgs_name(system, arch)}/bin/{binary}"
        c.check(f"cp {src} usr/local/bin/{binary}" in i.get("extraCommands", ""),
                f"{where} {key}: copies the {target} {binary}")
        c.check(i.get("architecture") == docker_arch, f"{where} {key}: architecture {docker_arch}")
        c.check(i.get("includeStorePaths") is False, f"{where} {key}: no store paths")
    script = img_pkg.get("script", "")
    for key in IMAGES:
        c.check(f"$out/{key}.tar" in script, f"{where}: has {key}.tar")
    for s in ("load-into-kind", "load-into-docker", "SIZES.txt", "images.txt"):
        c.check(s in script, f"{where}: has {s}")


def main(argv):
    with open(argv[0], encoding="utf-8") as f:
        d = json.load(f)
    bins = binaries()
    c = Checker()
    for system in ("x86_64-linux", "aarch64-linux"):
        arch = system.split("-")[0]
        target = TARGETS[arch][0]
        pkgs = d["packages"][system]
        artifacts = {check_static(c, pkgs, b, arch, system) for b in bins}
        c.check(len(artifacts) == len({PROFILES.get(b, "release") for b in bins}),
                f"{system}: one dependency build per profile ({artifacts})")
        check_images(c, pkgs.get("images"), arch, system)
        if arch == "x86_64":
            cross_artifacts = {check_static(c, pkgs, b, "aarch64", system, "-aarch64") for b in bins}
            c.check(len(cross_artifacts) == len({PROFILES.get(b, "release") for b in bins}),
                    f"{system}: one aarch64 dependency build per profile ({cross_artifacts})")
            check_images(c, pkgs.get("images-aarch64"), "aarch64", system, "-aarch64")
        crds = pkgs.get("crds", {})
        c.check("apollo-crdgen --out-dir $out" in crds.get("script", "")
                and crds.get("env", {}).get("nativeBuildInputs", [None])[0]
                == f"/stub/crane-buildPackage/apollo-crdgen@{system}",
                f"{system} crds: generated by running apollo-crdgen")
        default = pkgs.get("default", {})
        c.check(default.get("_kind") == "symlink-join"
                and sorted(default.get("paths", [])) == sorted(
                    f"/stub/crane-buildPackage/{b}@{pkgs_name(system, arch)}" for b in bins),
                f"{system} default: all static binaries")
        compose = pkgs.get("compose", {})
        services = compose.get("env", {}).get("passthru", {}).get("attrs", {}).get("services", {})
        c.check(sorted(services) == ["agent-tor1-01", "agent-tor1-02"]
                and all(s.get("image") == "apollo/agent:dev" for s in services.values()),
                f"{system} compose: default agents with the flake's agent image")
        c.check("docker-compose.yaml" in compose.get("script", ""), f"{system} compose: writes docker-compose.yaml")

        checks = d["checks"][system]
        clippy, nextest, fmt = checks.get("clippy", {}), checks.get("nextest", {}), checks.get("fmt", {})
        c.check(clippy.get("_kind") == "crane-cargoClippy" and clippy.get("_pkgs") == system,
                f"{system} clippy: host target")
        c.check("--all-targets -- --deny warnings" in clippy.get("cargoClippyExtraArgs", ""),
                f"{system} clippy: --all-targets -D warnings")
        c.check(nextest.get("_kind") == "crane-cargoNextest" and nextest.get("_pkgs") == system,
                f"{system} nextest: host target")
        c.check(clippy.get("cargoArtifacts") == nextest.get("cargoArtifacts") is not None,
                f"{system} clippy and nextest share one dependency build")
        c.check("CARGO_BUILD_TARGET" not in clippy and "CARGO_BUILD_TARGET" not in nextest,
                f"{system} clippy/nextest not cross")
        c.check(fmt.get("_kind") == "crane-cargoFmt", f"{system} fmt: cargo fmt --check")
        for sub in ("docs?", "k8s?", "scripts?"):
            c.check(f'"{sub}"' in nextest.get("src", ""),
                    f"{system} nextest: source includes {sub[:-1]}/ (read by tests)")
        for tool in ("python3", "kubectl", "curl", "shellcheck"):
            c.check(f"/stub/package/{tool}" in nextest.get("nativeBuildInputs", []),
                    f"{system} nextest: {tool} available to tests")
        c.check(nextest.get("APOLLO_DEMO_SKIP_BUILD") == "1",
                f"{system} nextest: the demo tests use the binaries nextest built (no cargo in a test)")
        c.check("apollo-crdgen --out-dir k8s/crds --check" in checks.get("crds-up-to-date", {}).get("script", ""),
                f"{system} crds-up-to-date: apollo-crdgen --check on k8s/crds")
        cscript = checks.get("compose", {}).get("script", "")
        c.check("compose_check.py" in cscript and "docker-compose -f docker-compose.yaml config" in cscript,
                f"{system} compose check: policy test and docker compose config")
        sscript = checks.get("static-binaries", {}).get("script", "")
        c.check(all(f"/{b}@{system}/" in sscript for b in bins) and "INTERP" in sscript and "NEEDED" in sscript,
                f"{system} static-binaries: every binary checked for interpreter and shared libraries")
        c.check(checks.get("images", {}).get("_kind") == "run-command" and "_images" in checks.get("images", {}),
                f"{system} checks: the images are built by nix flake check")
        shell = d["devShells"][system]["default"]
        have = set(shell.get("packages", []))
        for tool in SHELL_TOOLS:
            c.check(f"/stub/package/{tool}" in have, f"{system} dev shell: {tool}")
        c.check("/stub/rust-toolchain/1.95.0" in have, f"{system} dev shell: Rust toolchain")
        c.check("/stub/crane-" not in json.dumps(shell),
                f"{system} dev shell: opening it builds nothing of the project (no crane derivation)")
        c.check(shell.get("KIND_CLUSTER") == "apollo-dev", f"{system} dev shell: KIND_CLUSTER=apollo-dev")

    for what in c.failed:
        print(f"flake_check: FAIL {what}", file=sys.stderr)
    print(f"flake_check: {c.passed} checks passed, {len(c.failed)} failed")
    return 0 if not c.failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
