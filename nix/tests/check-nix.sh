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
for manifest in sorted(glob.glob("crates/*/Cargo.toml")):
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
if eval_json nix/tests/flake-stub.nix > "$tmp/flake-stub.json"; then
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
else
  fail "flake packages, checks and dev shells evaluate (stubbed nixpkgs/crane/rust-overlay)"
  eval_json nix/tests/flake-stub.nix 2>&1 | sed 's/^/     /' >&2 || true
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
  cp -r k8s "$tmp/crds-src/"
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

# --- narHash recomputation ----------------------------------------------------------
if [ -n "${APOLLO_NIX_SOURCES:-}" ]; then
  check "locked narHashes recomputed from source (APOLLO_NIX_SOURCES=$APOLLO_NIX_SOURCES)" bash nix/tests/verify-lock-hashes.sh flake.lock
else
  skip "narHash recomputation: set APOLLO_NIX_SOURCES to a directory of git clones (see docs/PACKAGING.md)"
fi

echo "check-nix: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
