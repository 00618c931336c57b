#!/usr/bin/env bash
# Recompute the narHash (and lastModified) of locked GitHub inputs from their
# source, without a Nix store or network: export the tree at the locked rev
# with `git archive` (as GitHub's tarball does: export-ignore/export-subst
# honoured, no .git) and hash it with `nix hash path` (Debian's nix-bin).
#
#   APOLLO_NIX_SOURCES=DIR nix/tests/verify-lock-hashes.sh [FLAKE_LOCK]
#
# DIR holds git clones (bare or not) named <owner>+<repo>/repo, <owner>+<repo>
# or <owner>/<repo>. An input whose clone or commit is not there is SKIPPED
# with a message (CI has no copy of the sources); set
# APOLLO_REQUIRE_LOCK_SOURCES=1 to make a skip an error.
#
# Method cross-check: when crane's source is available, the GitHub entries of
# crane's own test/flake.lock at the locked crane commit (hashes computed by
# real Nix with network) are recomputed the same way, for every source here.
set -euo pipefail

lock="${1:-flake.lock}"
sources="${APOLLO_NIX_SOURCES:-}"
require="${APOLLO_REQUIRE_LOCK_SOURCES:-0}"

verified=0
failed=0
skipped=0

if ! command -v nix >/dev/null 2>&1; then
  echo "verify-lock-hashes: SKIP all: no 'nix' command (apt-get install nix-bin)"
  [ "$require" = 1 ] && exit 1
  exit 0
fi
if [ -z "$sources" ] || [ ! -d "$sources" ]; then
  echo "verify-lock-hashes: SKIP all: APOLLO_NIX_SOURCES is not a directory of git clones (sources not available offline)"
  [ "$require" = 1 ] && exit 1
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

find_git_dir() { # owner repo -> a git dir or nothing
  local d
  for d in "$sources/$1+$2/repo" "$sources/$1+$2" "$sources/$1/$2"; do
    if [ -d "$d" ] && git -C "$d" rev-parse --git-dir >/dev/null 2>&1; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

# lock file -> "owner repo rev narHash lastModified" lines for GitHub nodes
github_nodes() {
  python3 - "$1" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    lock = json.load(f)
for name, node in sorted(lock["nodes"].items()):
    l = node.get("locked")
    if l and l.get("type") == "github":
        print(l["owner"], l["repo"], l["rev"], l["narHash"], l["lastModified"])
PY
}

verify_lock() { # lock-file label
  local file="$1" label="$2" owner repo rev nar lm gitdir tree got got_lm
  while read -r owner repo rev nar lm; do
    if ! gitdir="$(find_git_dir "$owner" "$repo")"; then
      echo "verify-lock-hashes: SKIP $label $owner/$repo@$rev: no clone under $sources"
      skipped=$((skipped + 1)); continue
    fi
    if ! git -C "$gitdir" cat-file -e "$rev^{commit}" 2>/dev/null; then
      echo "verify-lock-hashes: SKIP $label $owner/$repo@$rev: commit not in $gitdir"
      skipped=$((skipped + 1)); continue
    fi
    tree="$work/$owner-$repo-$rev"
    rm -rf "$tree"; mkdir -p "$tree"
    git -C "$gitdir" archive --format=tar "$rev" | tar -x -C "$tree"
    got="$(nix --extra-experimental-features nix-command hash path --type sha256 --sri "$tree")"
    got_lm="$(git -C "$gitdir" log -1 --format=%ct "$rev")"
    if [ "$got" = "$nar" ] && [ "$got_lm" = "$lm" ]; then
      echo "verify-lock-hashes: OK   $label $owner/$repo@$rev narHash $got lastModified $got_lm"
      verified=$((verified + 1))
    else
      echo "verify-lock-hashes: FAIL $label $owner/$repo@$rev: narHash locked $nar computed $got; lastModified locked $lm computed $got_lm" >&2
      failed=$((failed + 1))
    fi
  done < <(github_nodes "$file")
}

verify_lock "$lock" "flake.lock"

# Method cross-check against crane's own lock file at the locked crane commit.
crane_rev="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nodes"].get("crane",{}).get("locked",{}).get("rev",""))' "$lock")"
if [ -n "$crane_rev" ] && crane_dir="$(find_git_dir ipetkov crane)" \
  && git -C "$crane_dir" cat-file -e "$crane_rev:test/flake.lock" 2>/dev/null; then
  git -C "$crane_dir" show "$crane_rev:test/flake.lock" > "$work/crane-test-flake.lock"
  verify_lock "$work/crane-test-flake.lock" "crane@${crane_rev:0:7}:test/flake.lock"
  # Provenance: a pin of ours whose rev crane's lock also has must carry the
  # same narHash and lastModified (this is where our nixpkgs pin comes from).
  while read -r line; do
    case "$line" in
      SAME*) echo "verify-lock-hashes: OK   ${line#SAME }"; verified=$((verified + 1)) ;;
      DIFF*) echo "verify-lock-hashes: FAIL ${line#DIFF }" >&2; failed=$((failed + 1)) ;;
    esac
  done < <(python3 - "$lock" "$work/crane-test-flake.lock" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1], encoding="utf-8"))["nodes"]
theirs = json.load(open(sys.argv[2], encoding="utf-8"))["nodes"]
by_rev = {n["locked"]["rev"]: (k, n["locked"]) for k, n in theirs.items() if n.get("locked", {}).get("rev")}
for name, node in sorted(ours.items()):
    l = node.get("locked")
    if not l or l.get("rev") not in by_rev:
        continue
    tname, t = by_rev[l["rev"]]
    same = t.get("narHash") == l.get("narHash") and t.get("lastModified") == l.get("lastModified")
    print(("SAME" if same else "DIFF"),
          f"flake.lock {name}@{l['rev'][:12]} is identical to crane's test/flake.lock node {tname}"
          if same else f"flake.lock {name}@{l['rev'][:12]} differs from crane's test/flake.lock node {tname}")
PY
  )
fi

echo "verify-lock-hashes: $verified verified, $failed failed, $skipped skipped"
if [ "$failed" -gt 0 ]; then exit 1; fi
if [ "$require" = 1 ] && [ "$skipped" -gt 0 ]; then exit 1; fi
exit 0
