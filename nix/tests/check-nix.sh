#!/usr/bin/env bash
# Checks of the Nix packaging that run without a Nix store or network
# (CI: apt-get install -y nix-bin shellcheck python3; docker-compose optional).
#
#   bash nix/tests/check-nix.sh
#
# - every .nix file parses (nix-instantiate --parse)
# - compose.nix evaluates with defaults and custom arguments; the output is a
#   valid compose file with one agent per device, the env names, the key from
#   a per-device env file, host-gateway, restart, read-only root and no
#   Kubernetes credentials or mounts (compose_check.py; plus `docker compose
#   config` / `docker-compose config` when a client is installed); bad
#   arguments are refused
# - flake.lock is well-formed and locks every flake.nix input (lock_check.py)
# - the flake's packages/checks/devShells are listed (inputs stubbed) and
#   match the workspace's binary crates
# - every flake value evaluated against recording stand-ins for nixpkgs,
#   crane and rust-overlay, and its wiring asserted (flake-stub.nix,
#   flake_check.py)
# - the `crds` build and `crds-up-to-date` check scripts run with a real
#   apollo-crdgen when one has been built (else skipped)
# - image contents/configs and the load scripts (images_check.py)
# - locked narHashes recomputed from source where available
#   (verify-lock-hashes.sh; skipped unless APOLLO_NIX_SOURCES is set)
# - the Nix version floor (nix/nix-version.nix): the guard refuses older Nix,
#   docs/PACKAGING.md states the same floor, and crane's CHANGELOG at the
#   locked commit names it (when crane's source is in APOLLO_NIX_SOURCES)
# - every top-level flake output is one `nix flake check` knows (no warning)
# - test code runs in the Nix build sandbox: no `#!/usr/bin/env`, /bin/bash,
#   /bin/sleep, `kill` program or PATH of fixed system dirs; every top-level
#   directory a test reads is in the checks' source (nix/source.nix) and none
#   is in the release source
#
# Ends with "check-nix: N passed, M failed"; exit status 1 when anything failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*" >&2; }
skip() { echo "skip $*"; }
check() { # description command...
  local what="$1"; shift
  local output
  if output="$("$@" 2>&1)"; then pass "$what"; else fail "$what"; printf '%s\n' "$output" | sed 's/^/     /' >&2; fi
}
check_fails() { # description command... (the command must fail)
  local what="$1"; shift
  if "$@" >/dev/null 2>&1; then fail "$what (unexpectedly succeeded)"; else pass "$what"; fi
}

for tool in nix-instantiate python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check-nix: '$tool' not found (apt-get install -y nix-bin python3)" >&2
    exit 1
  fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

eval_json() { nix-instantiate --eval --strict --json "$@"; }

# --- scripts -----------------------------------------------------------------
if command -v shellcheck >/dev/null 2>&1; then
  for f in nix/tests/*.sh; do check "shellcheck $f" shellcheck "$f"; done
else
  skip "shellcheck not installed (apt-get install -y shellcheck)"
fi

# --- every .nix file parses --------------------------------------------------
nix_files=()
while IFS= read -r f; do nix_files+=("$f"); done < <(
  find . \( -path ./target -o -path ./.git -o -path ./result -o -name node_modules \) -prune -o -name '*.nix' -print | sort)
if [ "${#nix_files[@]}" -lt 10 ]; then fail "found the .nix files (${#nix_files[@]})"; fi
for f in "${nix_files[@]}"; do check "parse $f" nix-instantiate --parse "$f"; done

# --- compose.nix ---------------------------------------------------------------
compose_ok() { # json-file devices [compose_check args...]
  local file="$1" devices="$2"; shift 2
  python3 nix/tests/compose_check.py "$file" --devices "$devices" "$@"
}
if eval_json -E 'import ./compose.nix { }' > "$tmp/default.json"; then
  pass "compose.nix evaluates with defaults"
  check "compose defaults: agents tor1-01, tor1-02, runbook gateway URL, apollo/agent:dev" \
    compose_ok "$tmp/default.json" tor1-01,tor1-02 --gateway http://host.docker.internal:18080 --image apollo/agent:dev
else
  fail "compose.nix evaluates with defaults"
fi
if eval_json compose.nix --arg devices '[ "a" "b" ]' > "$tmp/ab.json"; then
  pass "compose.nix evaluates with --arg devices '[ \"a\" \"b\" ]'"
  check "compose custom devices: one service per device" compose_ok "$tmp/ab.json" a,b --gateway http://host.docker.internal:18080
else
  fail "compose.nix evaluates with --arg devices '[ \"a\" \"b\" ]'"
fi
if eval_json compose.nix --arg devices '[ "spine1-01" "tor2-07" "tor2-08" ]' \
  --argstr gatewayUrl https://gw.example.test:8443 --argstr image registry.test/apollo/agent:1.2.3 \
  --argstr keyDir /etc/apollo/keys/ > "$tmp/custom.json"; then
  pass "compose.nix evaluates with every argument set"
  check "compose custom arguments honoured (gateway, image, key dir without trailing slash)" \
    compose_ok "$tmp/custom.json" spine1-01,tor2-07,tor2-08 --gateway https://gw.example.test:8443 \
    --image registry.test/apollo/agent:1.2.3 --key-dir /etc/apollo/keys
else
  fail "compose.nix evaluates with every argument set"
fi
check_fails "compose.nix refuses duplicate devices" eval_json compose.nix --arg devices '[ "a" "a" ]'
check_fails "compose.nix refuses an invalid device name" eval_json compose.nix --arg devices '[ "Tor_1" ]'
check_fails "compose.nix refuses a device name with a path" eval_json compose.nix --arg devices '[ "../x" ]'
check_fails "compose.nix refuses an empty device list" eval_json compose.nix --arg devices '[ ]'
check_fails "compose.nix refuses a non-URL gateway" eval_json compose.nix --argstr gatewayUrl 'host:18080'

# The checker itself must catch what it is meant to catch.
mutate() { # name python-expression-on-doc
  python3 - "$tmp/default.json" "$tmp/$1.json" "$2" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
svc = doc["services"]["agent-tor1-01"]
exec(sys.argv[3])
json.dump(doc, open(sys.argv[2], "w"))
PY
}
if [ -s "$tmp/default.json" ]; then
  mutate volume 'svc["volumes"] = ["~/.kube:/root/.kube:ro"]'
  mutate kubeconfig 'svc["environment"]["KUBECONFIG"] = "/kube/config"'
  mutate writable 'del svc["read_only"]'
  mutate norestart 'svc["restart"] = "no"'
  mutate inlinekey 'svc["environment"]["APOLLO_DEVICE_KEY"] = "00"'
  mutate nohostgw 'svc["extra_hosts"] = []'
  mutate missing 'del doc["services"]["agent-tor1-02"]'
  mutate badkey 'svc["restartt"] = "always"'
  mutate badhost 'svc["extra_hosts"] = ["host.docker.internal"]'
  mutate sa 'svc["environment"]["TOKEN_PATH"] = "/var/run/secrets/kubernetes.io/serviceaccount/token"'
  for m in volume kubeconfig writable norestart inlinekey nohostgw missing badkey badhost sa; do
    check_fails "compose_check rejects mutation '$m'" compose_ok "$tmp/$m.json" tor1-01,tor1-02
  done
fi

# A real compose client, when installed (`config` needs no engine).
compose_cli=()
if docker compose version >/dev/null 2>&1; then
  compose_cli=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose_cli=(docker-compose)
fi
if [ "${#compose_cli[@]}" -gt 0 ] && [ -s "$tmp/default.json" ]; then
  project="$tmp/project"
  mkdir -p "$project/keys"
  cp "$tmp/default.json" "$project/docker-compose.yaml"
  for d in tor1-01 tor1-02; do echo "APOLLO_DEVICE_KEY=key-for-$d" > "$project/keys/$d.env"; done
  if (cd "$project" && "${compose_cli[@]}" -f docker-compose.yaml config > "$tmp/resolved.yaml" 2> "$tmp/resolved.err"); then
    pass "${compose_cli[*]} config accepts the generated file"
    for d in tor1-01 tor1-02; do
      check "${compose_cli[*]} config: agent-$d gets its key from keys/$d.env" grep -q "key-for-$d" "$tmp/resolved.yaml"
    done
  else
    fail "${compose_cli[*]} config accepts the generated file"; sed 's/^/     /' "$tmp/resolved.err" >&2
  fi
  rm "$project/keys/tor1-02.env"
  check_fails "${compose_cli[*]} config fails when a device key file is missing" \
    bash -c "cd '$project' && ${compose_cli[*]} -f docker-compose.yaml config"
else
  skip "no docker compose client (docker compose v2 or docker-compose); structure checked by compose_check.py only"
fi

# --- flake.lock ----------------------------------------------------------------
if eval_json -E '(import ./flake.nix).inputs' > "$tmp/inputs.json"; then
  pass "flake.nix inputs evaluate"
  check "flake.lock is well-formed and locks every input" python3 nix/tests/lock_check.py flake.lock "$tmp/inputs.json"
  python3 - flake.lock "$tmp/lock-bad1.json" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1])); del lock["nodes"]["root"]["inputs"]["crane"]
json.dump(lock, open(sys.argv[2], "w"))
PY
  check_fails "lock_check rejects a lock missing an input" python3 nix/tests/lock_check.py "$tmp/lock-bad1.json" "$tmp/inputs.json"
  python3 - flake.lock "$tmp/lock-bad2.json" <<'PY'
import json, sys
lock = json.load(open(sys.argv[1])); lock["nodes"]["rust-overlay"]["locked"]["narHash"] = "sha256-AAAA"
lock["nodes"]["rust-overlay"]["inputs"]["nixpkgs"] = "nixpkgs_2"
json.dump(lock, open(sys.argv[2], "w"))
PY
  check_fails "lock_check rejects a bad narHash and a broken follows" python3 nix/tests/lock_check.py "$tmp/lock-bad2.json" "$tmp/inputs.json"
else
  fail "flake.nix inputs evaluate"
fi

# --- flake outputs (names only; inputs stubbed, nothing is built) ---------------
cat > "$tmp/outputs.nix" <<EOF
let
  flake = import $root/flake.nix;
  stub = name: throw "input \${name} must not be needed to list outputs";
  out = flake.outputs { self = { }; nixpkgs = stub "nixpkgs"; crane = stub "crane"; rust-overlay = stub "rust-overlay"; };
  names = builtins.mapAttrs (_: builtins.mapAttrs (_: builtins.attrNames));
in names { inherit (out) packages checks devShells; } // { lib = builtins.attrNames out.lib; }
EOF
if eval_json "$tmp/outputs.nix" > "$tmp/outputs.json"; then
  pass "flake outputs can be listed"
  check "flake outputs match the workspace's binary crates" python3 - "$tmp/outputs.json" <<'PY'
import glob, json, os, sys, tomllib
out = json.load(open(sys.argv[1]))
# Binary crates, found independently of nix/meta.nix: [[bin]] or src/main.rs.
bins = []
for manifest in sorted(glob.glob("crates/*/Cargo.toml") + glob.glob("dev/*/Cargo.toml")):
    with open(manifest, "rb") as f:
        toml = tomllib.load(f)
    if toml.get("bin") or os.path.exists(os.path.join(os.path.dirname(manifest), "src/main.rs")):
        bins.append(toml["package"]["name"])
errors = [f"binary crate {core} missing" for core in
          ("apollo-controller", "apollo-gateway", "apollo-agent", "apollo-crdgen") if core not in bins]
for system in ("x86_64-linux", "aarch64-linux"):
    pk = set(out["packages"][system])
    want = set(bins) | {"images", "compose", "default"} | ({"crds"} if "apollo-crdgen" in bins else set())
    if system == "x86_64-linux":
        want |= {"images-aarch64"} | {f"{b}-aarch64" for b in bins}
    if pk != want:
        errors.append(f"packages.{system}: got {sorted(pk)}, want {sorted(want)}")
    ck = set(out["checks"][system])
    want_ck = {"clippy", "nextest", "fmt", "compose", "static-binaries", "images"} | ({"crds-up-to-date"} if "apollo-crdgen" in bins else set())
    if ck != want_ck:
        errors.append(f"checks.{system}: got {sorted(ck)}, want {sorted(want_ck)}")
    if out["devShells"][system] != ["default"]:
        errors.append(f"devShells.{system}: {out['devShells'][system]}")
if out["lib"] != ["compose"]:
    errors.append(f"lib: {out['lib']}")
print("binaries:", " ".join(bins) or "(none yet)")
if errors:
    print("\n".join(errors)); sys.exit(1)
PY
else
  fail "flake outputs can be listed"
fi
check "toolchain pins a version with both musl targets" bash -c \
  "[ \"\$(nix-instantiate --eval --strict --json -E 'let t = import ./nix/toolchain.nix; in builtins.all (x: builtins.elem x t.targets) [ \"x86_64-unknown-linux-musl\" \"aarch64-unknown-linux-musl\" ] && builtins.match \"[0-9]+[.][0-9]+[.][0-9]+\" t.version != null')\" = true ]"

# --- flake wiring (every value evaluated against recording stand-ins) ----------
# The stubbed evaluation stands in for a supported Nix (the guard itself is
# checked in the "Nix version floor" section below).
min_nix="$(nix-instantiate --eval --strict --json -E '(import ./nix/nix-version.nix).minimum' | tr -d '"')"
stub_eval() { APOLLO_ASSUME_NIX_VERSION="$min_nix" eval_json nix/tests/flake-stub.nix; }
if stub_eval > "$tmp/flake-stub.json"; then
  pass "flake packages, checks and dev shells evaluate (stubbed nixpkgs/crane/rust-overlay)"
  check "flake wiring: static musl targets, shared deps, images, crds, checks, dev shell" \
    python3 nix/tests/flake_check.py "$tmp/flake-stub.json"
  python3 - "$tmp/flake-stub.json" "$tmp/flake-stub-bad.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["packages"]["x86_64-linux"]["apollo-gateway"]
del p["CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS"]
d["checks"]["x86_64-linux"]["clippy"]["cargoClippyExtraArgs"] = "--all-targets"
json.dump(d, open(sys.argv[2], "w"))
PY
  check_fails "flake_check rejects a build without crt-static and clippy without -D warnings" \
    python3 nix/tests/flake_check.py "$tmp/flake-stub-bad.json"
  # Each defect of issue #18, put back into the evaluation, must be caught.
  mutate_stub() { # name python-statements-on-d
    python3 - "$tmp/flake-stub.json" "$tmp/flake-stub-$1.json" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
x86 = d["packages"]["x86_64-linux"]
exec(sys.argv[3])
json.dump(d, open(sys.argv[2], "w"))
PY
  }
  mutate_stub crossgcc 'x86["apollo-gateway"]["_pkgs"] = "x86_64-linux/pkgsCross.musl64"'
  mutate_stub nomuslgcc 'del x86["apollo-gateway"]["CC_x86_64_unknown_linux_musl"]'
  mutate_stub agentprofile 'x86["apollo-agent"]["CARGO_PROFILE"] = "release"'
  mutate_stub k8ssrc 'x86["apollo-gateway"]["src"] += "k8s?"'
  mutate_stub noscripts 'n = d["checks"]["x86_64-linux"]["nextest"]; n["src"] = n["src"].replace("scripts?", "")'
  mutate_stub shellbuild 'd["devShells"]["x86_64-linux"]["default"]["packages"].append("/stub/crane-buildPackage/apollo-crdgen@x86_64-linux")'
  mutate_stub cargointest 'del d["checks"]["x86_64-linux"]["nextest"]["APOLLO_DEMO_SKIP_BUILD"]'
  for m in crossgcc nomuslgcc agentprofile k8ssrc noscripts shellbuild cargointest; do
    check_fails "flake_check rejects mutation '$m'" python3 nix/tests/flake_check.py "$tmp/flake-stub-$m.json"
  done
else
  fail "flake packages, checks and dev shells evaluate (stubbed nixpkgs/crane/rust-overlay)"
  stub_eval 2>&1 | sed 's/^/     /' >&2 || true
fi

# --- the crds package and crds-up-to-date check scripts, with a real generator --
crdgen="${APOLLO_CRDGEN:-}"
for candidate in target/debug/apollo-crdgen target/release/apollo-crdgen "$(command -v apollo-crdgen || true)"; do
  if [ -z "$crdgen" ] && [ -n "$candidate" ] && [ -x "$candidate" ]; then crdgen="$candidate"; fi
done
if [ -n "$crdgen" ] && [ -s "$tmp/flake-stub.json" ]; then
  crdgen="$(cd "$(dirname "$crdgen")" && pwd)/$(basename "$crdgen")"
  mkdir -p "$tmp/crdgen-bin" "$tmp/crds-src"
  ln -sf "$crdgen" "$tmp/crdgen-bin/apollo-crdgen"
  cp -r k8s k8s-pre-1.* "$tmp/crds-src/"
  python3 - "$tmp/flake-stub.json" "$tmp" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
tmp = sys.argv[2]
open(f"{tmp}/crds.sh", "w").write(d["packages"]["x86_64-linux"]["crds"]["script"])
check = d["checks"]["x86_64-linux"]["crds-up-to-date"]["script"]
open(f"{tmp}/crds-check.sh", "w").write(re.sub(r"cp -r \S+ source", f"cp -r {tmp}/crds-src source", check))
PY
  check "crds package script generates the CRDs ($crdgen)" \
    env PATH="$tmp/crdgen-bin:$PATH" out="$tmp/crds-out" bash -euo pipefail "$tmp/crds.sh"
  check "crds package output equals k8s/crds" diff -r "$tmp/crds-out" k8s/crds
  check "crds-up-to-date check script passes on k8s/crds" \
    bash -c "cd '$tmp' && PATH='$tmp/crdgen-bin':\$PATH out='$tmp/crds-check-out' bash -euo pipefail crds-check.sh"
  printf '# stale\n' >> "$(find "$tmp/crds-src/k8s/crds" -name '*.yaml' | sort | head -n 1)"
  check_fails "crds-up-to-date check script fails on a stale CRD" \
    bash -c "cd '$tmp' && rm -rf source && PATH='$tmp/crdgen-bin':\$PATH out='$tmp/crds-check-out2' bash -euo pipefail crds-check.sh"
else
  skip "crds scripts with a real generator: no apollo-crdgen binary (cargo build -p apollo-crdgen, or APOLLO_CRDGEN=path)"
fi

# --- images and load scripts -------------------------------------------------------
mkdir -p "$tmp/stub"
if eval_json nix/tests/images-stub.nix --argstr stubDir "$tmp/stub" > "$tmp/images.json"; then
  pass "nix/images.nix evaluates (stubbed nixpkgs)"
  check "images: distroless contents, configs, tags, load-into-kind" python3 nix/tests/images_check.py "$tmp/images.json" "$tmp/stub"
else
  fail "nix/images.nix evaluates (stubbed nixpkgs)"
fi

# --- Nix version floor ---------------------------------------------------------------
nix_guard() { nix-instantiate --eval --strict -E "(import ./nix/nix-version.nix).check \"$1\""; }
check "nix-version guard accepts Nix $min_nix and 2.34.7" nix_guard 2.34.7
check "nix-version guard accepts Nix $min_nix itself" nix_guard "$min_nix"
check_fails "nix-version guard refuses Nix 2.31.1" nix_guard 2.31.1
check_fails "nix-version guard refuses Nix 2.18.1" nix_guard 2.18.1
if APOLLO_ASSUME_NIX_VERSION=2.30.0 eval_json nix/tests/flake-stub.nix >/dev/null 2>"$tmp/old-nix.err"; then
  fail "the flake refuses to evaluate with Nix 2.30.0"
else
  check "the flake refuses Nix 2.30.0 with a message naming both versions" \
    grep -q "needs Nix >= $min_nix.*this is Nix 2.30.0" "$tmp/old-nix.err"
fi
check "docs/PACKAGING.md states the Nix floor $min_nix (README none other)" python3 - "$min_nix" <<'PY'
import re, sys
floor = sys.argv[1]
for doc in ("docs/PACKAGING.md", "README.md"):
    text = open(doc, encoding="utf-8").read()
    stated = set(re.findall(r"Nix (?:≥|>=) ?([0-9]+\.[0-9]+(?:\.[0-9]+)?)", text))
    if doc == "docs/PACKAGING.md" and floor not in stated:
        sys.exit(f"{doc} does not state Nix ≥ {floor}")
    if stated - {floor}:
        sys.exit(f"{doc} states other Nix floors: {sorted(stated - {floor})}")
PY
crane_src=""
if [ -n "${APOLLO_NIX_SOURCES:-}" ]; then
  for d in "$APOLLO_NIX_SOURCES/ipetkov+crane/repo" "$APOLLO_NIX_SOURCES/ipetkov+crane" "$APOLLO_NIX_SOURCES/ipetkov/crane"; do
    if [ -z "$crane_src" ] && git -C "$d" rev-parse --git-dir >/dev/null 2>&1; then crane_src="$d"; fi
  done
fi
crane_rev="$(python3 -c 'import json; print(json.load(open("flake.lock"))["nodes"]["crane"]["locked"]["rev"])')"
if [ -n "$crane_src" ] && git -C "$crane_src" cat-file -e "$crane_rev^{commit}" 2>/dev/null; then
  crane_floor="$(git -C "$crane_src" show "$crane_rev:CHANGELOG.md" |
    sed -n 's/.*dropped compatibility for Nix versions below \([0-9.]*[0-9]\).*/\1/p' | head -n 1)"
  check "crane ${crane_rev:0:8}'s CHANGELOG names the same Nix floor ($crane_floor)" test "$crane_floor" = "$min_nix"
else
  skip "crane's CHANGELOG at the locked commit: crane's source is not in APOLLO_NIX_SOURCES"
fi

# --- top-level outputs -------------------------------------------------------------------
# What `nix flake check` checks, and the community outputs it accepts unchecked
# (`lib` among them since Nix 2.13; src/nix/flake.cc): any other name warns.
printf 'builtins.attrNames ((import %s/flake.nix).outputs { self = { }; nixpkgs = { }; crane = { }; rust-overlay = { }; })\n' \
  "$root" >"$tmp/outputs-top.nix"
if eval_json "$tmp/outputs-top.nix" >"$tmp/outputs-top.json"; then
  check "every top-level flake output is one nix flake check knows (no warning)" python3 - "$tmp/outputs-top.json" <<'PY'
import json, sys
known = {"checks", "formatter", "packages", "apps", "defaultPackage", "defaultApp", "legacyPackages",
         "overlay", "overlays", "nixosModule", "nixosModules", "nixosConfigurations", "hydraJobs",
         "defaultTemplate", "templates", "defaultBundler", "bundlers", "devShell", "devShells",
         # known but unchecked community outputs
         "lib", "darwinConfigurations", "darwinModules", "flakeModule", "flakeModules", "herculesCI",
         "homeConfigurations", "homeModule", "homeModules", "nixopsConfigurations"}
unknown = sorted(set(json.load(open(sys.argv[1]))) - known)
if unknown:
    sys.exit(f"nix flake check would warn: unknown flake output(s) {unknown}")
PY
else
  fail "top-level flake outputs can be listed"
fi

# --- tests under the Nix build sandbox's conditions ------------------------------------
# (nix/tests/nextest-sandbox.sh runs them so; these catch the same defects statically)
check "test code names no program by a fixed path (/usr/bin/env, /bin/bash, /bin/sleep, kill, PATH=/usr/bin:/bin)" python3 - <<'PY'
import glob, re, sys
patterns = [
    (re.compile(r"#!/usr/bin/env"), "#!/usr/bin/env (the sandbox has no /usr/bin/env)"),
    (re.compile(r'"/bin/bash"|#!/bin/bash'), "/bin/bash (not in the sandbox)"),
    (re.compile(r'"/(usr/)?bin/(sleep|true|false|cat|echo|env|kill)"'), "a coreutils program by path"),
    (re.compile(r'Command::new\("kill"\)'), "the kill program (not every coreutils build has it)"),
    (re.compile(r":/usr/bin:/bin|\"/usr/bin:/bin"), "a PATH of fixed system directories"),
]
bad = []
for path in sorted(glob.glob("crates/**/*.rs", recursive=True) + glob.glob("dev/**/*.rs", recursive=True)):
    text = open(path, encoding="utf-8").read()
    if "/tests/" not in path:  # src files: their #[cfg(test)] part
        i = text.find("#[cfg(test)]")
        if i < 0:
            continue
        text = text[i:]
    for line in text.splitlines():
        bad += [f"{path}: {why}: {line.strip()}" for rx, why in patterns if rx.search(line)]
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
check "every top-level directory tests read is in the checks' source and not in the release source" python3 - <<'PY'
import glob, json, os, re, subprocess, sys
top = {d for d in os.listdir(".") if os.path.isdir(d) and not d.startswith(".") and d not in ("target", "crates", "dev")}
read = set()
for path in glob.glob("crates/**/*.rs", recursive=True) + glob.glob("dev/**/*.rs", recursive=True):
    text = open(path, encoding="utf-8").read()
    for m in re.finditer(r'(?:join\("|"\.\./\.\./|/\.\./\.\./)([A-Za-z0-9_.-]+)/', text):
        if m.group(1) in top:
            read.add(m.group(1))
def fileset(for_tests):
    expr = ("import ./nix/source.nix { lib = import ./nix/tests/stub-lib.nix; root = ./.; "
            f"forTests = {str(for_tests).lower()}; }}")
    out = subprocess.run(["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(json.loads(out).split(":", 1)[1])
tests, release = fileset(True), fileset(False)
missing = sorted(d for d in read if d not in tests and f"{d}?" not in tests)
extra = sorted(d for d in top if d in release or f"{d}?" in release)
print("read by tests:", sorted(read))
if missing or extra or not read:
    sys.exit(f"missing from the checks' source: {missing}; in the release source: {extra}")
PY

# --- narHash recomputation ----------------------------------------------------------
if [ -n "${APOLLO_NIX_SOURCES:-}" ]; then
  check "locked narHashes recomputed from source (APOLLO_NIX_SOURCES=$APOLLO_NIX_SOURCES)" bash nix/tests/verify-lock-hashes.sh flake.lock
else
  skip "narHash recomputation: set APOLLO_NIX_SOURCES to a directory of git clones (see docs/PACKAGING.md)"
fi

echo "check-nix: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
