#!/usr/bin/env python3
"""Check that flake.lock is well-formed and locks every input of flake.nix.

Usage: lock_check.py FLAKE_LOCK INPUTS_JSON
  INPUTS_JSON: `(import ./flake.nix).inputs` as JSON, e.g. from
  nix-instantiate --eval --strict --json -E '(import ./flake.nix).inputs'

Checks (no network, no Nix store): lock version 7 and a root node; every
input of flake.nix is a root input and vice versa; each locked GitHub node
has owner/repo/rev (40 hex digits)/narHash (sha256 SRI, 32 bytes)/lastModified
and its `original` matches the URL in flake.nix; `follows` in flake.nix are
recorded as paths in the lock; every reference resolves and no node is
unreferenced. The narHashes themselves are recomputed by
verify-lock-hashes.sh where the sources are available.
"""

import base64
import json
import re
import sys
import time

REV = re.compile(r"^[0-9a-f]{40}$")
GITHUB_URL = re.compile(r"^github:([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)(?:/([^?]+))?$")


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


def valid_nar_hash(h):
    if not isinstance(h, str) or not h.startswith("sha256-"):
        return False
    try:
        return len(base64.b64decode(h[len("sha256-"):], validate=True)) == 32
    except ValueError:
        return False


def resolve(nodes, root, ref):
    """A node reference: a node name, or a path of input names from the root."""
    if isinstance(ref, str):
        return ref if ref in nodes else None
    if isinstance(ref, list):
        current = root
        for name in ref:
            target = nodes.get(current, {}).get("inputs", {}).get(name)
            if target is None:
                return None
            current = resolve(nodes, root, target)
            if current is None:
                return None
        return current
    return None


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        with open(argv[0], encoding="utf-8") as f:
            lock = json.load(f)
        with open(argv[1], encoding="utf-8") as f:
            inputs = json.load(f)
    except (OSError, ValueError) as e:
        print(f"lock_check: {e}", file=sys.stderr)
        return 1

    c = Checker()
    c.check(lock.get("version") == 7, "lock version is 7")
    root_name = lock.get("root")
    nodes = lock.get("nodes", {})
    c.check(isinstance(nodes, dict) and root_name in nodes, "root node exists")
    root_inputs = nodes.get(root_name, {}).get("inputs", {})
    c.check(set(root_inputs) == set(inputs),
            f"root inputs {sorted(root_inputs)} == flake.nix inputs {sorted(inputs)}")

    referenced = {root_name}
    for node_name, node in nodes.items():
        for input_name, ref in node.get("inputs", {}).items():
            target = resolve(nodes, root_name, ref)
            c.check(target is not None, f"{node_name}.inputs.{input_name} -> {ref!r} resolves")
            if target:
                referenced.add(target)
    c.check(referenced == set(nodes), f"no unreferenced nodes ({sorted(set(nodes) - referenced)})")

    now = time.time()
    for name, spec in inputs.items():
        node_name = root_inputs.get(name)
        node = nodes.get(node_name) if isinstance(node_name, str) else None
        if not c.check(node is not None, f"input {name} has a lock node"):
            continue
        url = spec.get("url", "")
        m = GITHUB_URL.match(url)
        if not c.check(m is not None, f"input {name}: url {url!r} is a github: URL"):
            continue
        owner, repo, ref = m.groups()
        original = node.get("original", {})
        expected_original = {"type": "github", "owner": owner, "repo": repo}
        if ref:
            expected_original["ref"] = ref
        c.check(original == expected_original,
                f"input {name}: original {original} matches url {url}")
        locked = node.get("locked", {})
        c.check(locked.get("type") == "github", f"input {name}: locked type github")
        c.check(locked.get("owner") == owner and locked.get("repo") == repo,
                f"input {name}: locked owner/repo {owner}/{repo}")
        c.check(isinstance(locked.get("rev"), str) and REV.match(locked["rev"]) is not None,
                f"input {name}: locked rev is 40 hex digits")
        c.check(valid_nar_hash(locked.get("narHash")), f"input {name}: narHash is a sha256 SRI hash")
        lm = locked.get("lastModified")
        c.check(isinstance(lm, int) and 1577836800 < lm < now + 86400,
                f"input {name}: lastModified is a plausible Unix time")
        c.check(set(locked) == {"type", "owner", "repo", "rev", "narHash", "lastModified"},
                f"input {name}: locked has exactly type/owner/repo/rev/narHash/lastModified")
        for sub, sub_spec in spec.get("inputs", {}).items():
            if "follows" in sub_spec:
                path = sub_spec["follows"].split("/")
                c.check(node.get("inputs", {}).get(sub) == path,
                        f"input {name}: inputs.{sub}.follows = {sub_spec['follows']!r} recorded as {path}")

    for what in c.failed:
        print(f"lock_check: FAIL {what}", file=sys.stderr)
    print(f"lock_check {argv[0]}: {c.passed} checks passed, {len(c.failed)} failed")
    return 0 if not c.failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
