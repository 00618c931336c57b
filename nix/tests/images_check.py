#!/usr/bin/env python3
"""Check the distroless images and load scripts described by nix/images.nix.

Usage: images_check.py STUB_JSON STUB_DIR
  STUB_JSON: nix-instantiate --eval --strict --json nix/tests/images-stub.nix
             --argstr stubDir STUB_DIR

Runs each image's layer commands in an empty directory and checks the
resulting root file system (only the static binary, /etc/passwd, /etc/group,
the non-root user's home and /tmp: no shell, no store paths), the image
configs (entrypoint, user 65532, OCI labels, tags used by k8s/), and runs the
`images` build script and `load-into-kind` with a fake `kind` to check that
every archive is loaded into the right cluster. Uses bash, shellcheck when
present, and the standard library.
"""

import json
import os
import shutil
import stat
import subprocess
import sys

EXPECTED_REFS = {
    "controller": "apollo/controller:dev",
    "controller-alias": "apollo-deviceprocess-controller:dev",
    "gateway": "apollo/gateway:dev",
    "agent": "apollo/agent:dev",
}
SHELL_HEADER = "#!/usr/bin/env bash\nset -o errexit\nset -o nounset\nset -o pipefail\n"


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


def tree(root):
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            full = os.path.join(dirpath, n)
            entries[os.path.relpath(full, root)] = os.lstat(full)
    return entries


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        d = json.load(f)
    stub = argv[1]
    c = Checker()

    # Fake static binaries and archives the stub refers to.
    for b in ("apollo-controller", "apollo-gateway", "apollo-agent"):
        os.makedirs(f"{stub}/bins/{b}/bin", exist_ok=True)
        with open(f"{stub}/bins/{b}/bin/{b}", "wb") as f:
            f.write(b"\x7fELF fake static " + b.encode())
    os.makedirs(f"{stub}/archives", exist_ok=True)
    for img in d["images"].values():
        with open(img["archive"], "wb") as f:
            f.write(b"fake archive " * 100)

    spec = {i["key"]: i for i in d["specImages"]}
    c.check({k: v["ref"] for k, v in spec.items()} == EXPECTED_REFS,
            f"image references are {EXPECTED_REFS}")
    c.check(set(d["images"]) == set(EXPECTED_REFS), "one image per reference")

    for key, img in sorted(d["images"].items()):
        where = f"image {key}"
        s = spec[key]
        cfg = img["config"]
        c.check(f"{img['name']}:{img['tag']}" == s["ref"], f"{where}: name:tag is {s['ref']}")
        c.check(cfg.get("Entrypoint") == [f"/usr/local/bin/{s['binary']}"], f"{where}: entrypoint is the binary")
        c.check(cfg.get("User") == "65532:65532", f"{where}: runs as 65532:65532")
        c.check("Cmd" not in cfg and "Shell" not in cfg, f"{where}: no shell command")
        labels = cfg.get("Labels", {})
        for label in ("source", "version", "revision", "title", "licenses"):
            c.check(bool(labels.get(f"org.opencontainers.image.{label}")), f"{where}: OCI label {label}")
        c.check(labels.get("org.opencontainers.image.version") == "0.1.0", f"{where}: version label")
        c.check(labels.get("org.opencontainers.image.source") == "https://example.invalid/apollo", f"{where}: source label")
        c.check(img["includeStorePaths"] is False, f"{where}: no /nix/store paths in the image")
        c.check(img["compressor"] == "none", f"{where}: uncompressed archive (kind load image-archive)")
        c.check(img["architecture"] == "amd64", f"{where}: architecture")
        c.check("65532:65532" in img["fakeRootCommands"], f"{where}: home owned by the non-root user")

        root = os.path.join(stub, "layers", key)
        shutil.rmtree(root, ignore_errors=True)
        os.makedirs(root)
        r = run(["bash", "-euo", "pipefail", "-c", img["extraCommands"]], cwd=root)
        if not c.check(r.returncode == 0, f"{where}: layer commands run ({r.stderr.strip()})"):
            continue
        entries = tree(root)
        files = {p for p, st in entries.items() if not stat.S_ISDIR(st.st_mode)}
        c.check(files == set(s["files"]), f"{where}: files are exactly {sorted(s['files'])}, got {sorted(files)}")
        c.check(not any(os.path.basename(p) in ("sh", "bash", "busybox", "apk", "apt", "dpkg") for p in entries),
                f"{where}: no shell or package manager")
        c.check(not any(stat.S_ISLNK(st.st_mode) for st in entries.values()), f"{where}: no symlinks (into a store)")
        binary = entries.get(f"usr/local/bin/{s['binary']}")
        c.check(binary is not None and stat.S_IMODE(binary.st_mode) == 0o555, f"{where}: binary mode 0555")
        tmp = entries.get("tmp")
        c.check(tmp is not None and stat.S_IMODE(tmp.st_mode) == 0o1777, f"{where}: /tmp mode 1777")
        with open(os.path.join(root, "etc/passwd"), encoding="utf-8") as f:
            passwd = f.read().splitlines()
        c.check("nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" in passwd, f"{where}: passwd entry for 65532")
        c.check(all(line.endswith("/sbin/nologin") for line in passwd), f"{where}: no login shells")
        with open(os.path.join(root, "etc/group"), encoding="utf-8") as f:
            c.check("nonroot:x:65532:" in f.read().splitlines(), f"{where}: group entry for 65532")

    c.check(d["images"]["controller"]["config"] == d["images"]["controller-alias"]["config"]
            and d["images"]["controller"]["extraCommands"] == d["images"]["controller-alias"]["extraCommands"],
            "controller alias has the same config and contents (same image ID)")

    # The `images` output: run its build script with a scratch $out.
    out = os.path.join(stub, "out")
    shutil.rmtree(out, ignore_errors=True)
    r = run(["bash", "-euo", "pipefail", "-c", d["script"]], env={**os.environ, "out": out})
    if c.check(r.returncode == 0, f"images build script runs ({r.stderr.strip()})"):
        with open(os.path.join(out, "images.txt"), encoding="utf-8") as f:
            listed = dict(line.split("\t") for line in f.read().splitlines())
        c.check(listed == {f"{k}.tar": v for k, v in EXPECTED_REFS.items()}, "images.txt lists every archive")
        for name in listed:
            c.check(os.path.islink(os.path.join(out, name)), f"images/{name} links to the archive")
        with open(os.path.join(out, "SIZES.txt"), encoding="utf-8") as f:
            rows = f.read().splitlines()
        c.check(len(rows) == 1 + len(EXPECTED_REFS) and all(r.split("\t")[2] == "1300" for r in rows[1:]),
                "SIZES.txt has the size of every archive")
        for script in ("load-into-kind", "load-into-docker"):
            c.check(os.path.islink(os.path.join(out, script)), f"images/{script} present")

    # load-into-kind with a fake kind on PATH.
    bindir = os.path.join(stub, "fakebin")
    os.makedirs(bindir, exist_ok=True)
    log = os.path.join(stub, "kind.log")
    with open(os.path.join(bindir, "kind"), "w", encoding="utf-8") as f:
        f.write(f'#!/usr/bin/env bash\necho "$*" >> {log}\n')
    os.chmod(os.path.join(bindir, "kind"), 0o755)
    script = os.path.join(stub, "load-into-kind")
    with open(script, "w", encoding="utf-8") as f:
        f.write(SHELL_HEADER + d["loadIntoKind"]["text"])
    os.chmod(script, 0o755)
    if shutil.which("shellcheck"):
        r = run(["shellcheck", script])
        c.check(r.returncode == 0, f"load-into-kind is shellcheck-clean ({r.stdout.strip()})")
    env = {k: v for k, v in os.environ.items() if k != "KIND_CLUSTER"}
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    archives = [d["images"][k]["archive"] for k in ("controller", "controller-alias", "gateway", "agent")]
    for args, cluster, extra_env in (([], "apollo-dev", {}), (["--name", "demo"], "demo", {}),
                                     ([], "from-env", {"KIND_CLUSTER": "from-env"})):
        if os.path.exists(log):
            os.remove(log)
        r = run([script, *args], env={**env, **extra_env})
        calls = open(log, encoding="utf-8").read().splitlines() if os.path.exists(log) else []
        c.check(r.returncode == 0 and calls == [f"load image-archive {a} --name {cluster}" for a in archives],
                f"load-into-kind {' '.join(args)} loads every archive into {cluster} (got {calls})")
    r = run([script, "--bogus"], env=env)
    c.check(r.returncode == 2, "load-into-kind rejects an unknown argument")
    c.check(d["loadIntoKind"]["runtimeInputs"] == [f"{stub}/kind-package"], "load-into-kind brings its own kind")

    docker_script = os.path.join(stub, "load-into-docker")
    with open(docker_script, "w", encoding="utf-8") as f:
        f.write(SHELL_HEADER + d["loadIntoDocker"]["text"])
    if shutil.which("shellcheck"):
        r = run(["shellcheck", docker_script])
        c.check(r.returncode == 0, f"load-into-docker is shellcheck-clean ({r.stdout.strip()})")

    for what in c.failed:
        print(f"images_check: FAIL {what}", file=sys.stderr)
    print(f"images_check: {c.passed} checks passed, {len(c.failed)} failed")
    return 0 if not c.failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
