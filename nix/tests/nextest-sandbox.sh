#!/usr/bin/env bash
# Runs the workspace's tests with `cargo nextest run` in conditions like those of the flake's
# `nextest` check inside the Nix build sandbox, so what would fail there fails here first
# (`make test-sandbox`; CI runs it):
#
# - one process per test (nextest), so nothing can rely on a process-wide lock or state;
# - no /usr/bin, /usr/sbin or /usr/local/bin: there is no /usr/bin/env and no /bin/bash (on a
#   merged-/usr system /bin is /usr/bin); only /bin/sh exists, as in the Nix sandbox;
# - PATH holds only copies of the tools the check has: what stdenv provides (bash, coreutils
#   without `kill`, findutils, diffutils, sed, grep, gawk, tar, gzip, bzip2, xz, make, patch),
#   the check's nativeBuildInputs (kubectl, python3, curl, shellcheck when installed here), the
#   Rust toolchain and cargo-nextest;
# - HOME=<read-only dir>/homeless-shelter, which does not exist and cannot be created;
# - no network: a network namespace of its own with only the loopback interface;
# - APOLLO_DEMO_SKIP_BUILD=1, as in the check (nextest has built every binary first).
#
# The test binaries are built first, outside, with the ordinary environment (the check builds
# them the same way before running them). Needs unshare(1) as root (CI) or with unprivileged
# user namespaces.
#
#   bash nix/tests/nextest-sandbox.sh [extra cargo-nextest run arguments]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

for tool in cargo cargo-nextest rustc unshare mount ip python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "nextest-sandbox: '$tool' not found" >&2
    exit 1
  fi
done

cargo nextest run --workspace --no-run

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tools="$tmp/tools"
mkdir -p "$tools" "$tmp/ro" "$tmp/build" "$tmp/usr-bin" "$tmp/host"

# What stdenv puts on PATH (coreutils without `kill`: not every coreutils build installs it).
stdenv_tools=(
  bash sh
  basename cat chmod chown comm cp cut date dd df dirname du echo env expr false head id install
  join ln ls md5sum mkdir mkfifo mktemp mv nl nohup nproc od paste printf pwd readlink realpath rm
  rmdir seq sha1sum sha256sum shuf sleep sort split stat stty sync tac tail tee test timeout touch
  tr true truncate tsort tty uname uniq wc whoami yes
  find xargs diff cmp sed grep egrep fgrep awk gawk tar gzip gunzip bzip2 xz make patch
)
check_tools=(kubectl curl shellcheck)
copy_tool() { # name [required]
  local path
  if path="$(command -v "$1" 2>/dev/null)" && [ -f "$path" ]; then
    cp -L "$path" "$tools/$1"
  elif [ "${2:-}" = required ]; then
    echo "nextest-sandbox: required tool '$1' not found" >&2
    exit 1
  fi
}
for t in "${stdenv_tools[@]}"; do copy_tool "$t"; done
for t in "${check_tools[@]}"; do copy_tool "$t"; done
copy_tool cargo-nextest required
# python3: the interpreter itself (a pyenv shim is a `#!/usr/bin/env bash` script).
ln -s "$(python3 -c 'import sys; print(sys.executable)')" "$tools/python3"
# mount(8) for the setup, kept off PATH.
cp -L "$(command -v mount)" "$tmp/host/mount"
# /bin/sh, the only program the Nix sandbox has outside the store.
cp -L "$(command -v sh)" "$tmp/usr-bin/sh"

sysroot="$(rustc --print sysroot)"
# Cargo's build settings from the caller's environment (CI sets CARGO_INCREMENTAL=0, a developer
# may set RUSTFLAGS or a target dir): the run inside must see the same ones, or cargo finds the
# test binaries built outside stale and tries to rebuild them with no C linker on PATH.
cargo_env=()
while IFS= read -r name; do
  case "$name" in
    CARGO_HOME | CARGO_TERM_COLOR) ;;
    CARGO_* | RUSTFLAGS | RUSTDOCFLAGS | RUSTC | RUSTC_WRAPPER | RUSTC_BOOTSTRAP)
      cargo_env+=("$name=${!name}") ;;
  esac
done < <(compgen -e)
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
nextest_args=("$@")

cat > "$tmp/inner.sh" <<'EOF'
set -euo pipefail
ip link set lo up
# Hide the host's programs; an empty /usr/bin except for sh.
mount="$SANDBOX_TMP/host/mount"
"$mount" --bind "$SANDBOX_TMP/usr-bin" /usr/bin
for d in /usr/sbin /usr/local/bin /usr/local/sbin; do
  if [ -d "$d" ]; then "$mount" --bind "$SANDBOX_TMP/ro" "$d"; fi
done
"$mount" --bind "$SANDBOX_TMP/ro" "$SANDBOX_TMP/ro"
"$mount" -o remount,bind,ro "$SANDBOX_TMP/ro"
cd "$SANDBOX_ROOT"
SANDBOX_CARGO_ENV=()
# shellcheck disable=SC1091 # written by the outer script: the caller's cargo settings
source "$SANDBOX_TMP/cargo-env.sh"
exec "$SANDBOX_TMP/tools/env" -i \
  PATH="$SANDBOX_TMP/tools:$SANDBOX_SYSROOT/bin" \
  HOME="$SANDBOX_TMP/ro/homeless-shelter" \
  TMPDIR="$SANDBOX_TMP/build" \
  CARGO_HOME="$SANDBOX_CARGO_HOME" \
  CARGO_TERM_COLOR=never \
  APOLLO_DEMO_SKIP_BUILD=1 \
  "${SANDBOX_CARGO_ENV[@]}" \
  cargo nextest run --workspace --offline --no-fail-fast "$@"
EOF

declare -p cargo_env | sed 's/^declare -a cargo_env=/SANDBOX_CARGO_ENV=/' > "$tmp/cargo-env.sh"

echo "nextest-sandbox: no /usr/bin/env, no /bin/bash, PATH=$tools:$sysroot/bin, read-only HOME, no network"
SANDBOX_TMP="$tmp" SANDBOX_ROOT="$root" SANDBOX_SYSROOT="$sysroot" SANDBOX_CARGO_HOME="$cargo_home" \
  unshare --mount --net --fork bash "$tmp/inner.sh" "${nextest_args[@]}"
