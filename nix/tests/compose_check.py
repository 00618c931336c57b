#!/usr/bin/env python3
"""Check a docker compose document produced by compose.nix.

Two layers of checks:

* structure: the document has the shape the Compose Specification requires
  (top-level keys, service names, the types of every service attribute used,
  allowed values for restart / pull_policy, the "host:address" form of
  extra_hosts, ...). Unknown service attributes are rejected so a typo does
  not silently produce a service docker compose would refuse;
* policy: what the Apollo demo needs from the agents: one service per device,
  the environment names, the device key only from a per-device env file,
  the host-gateway entry, a restart policy, a read-only root, and no
  Kubernetes credentials, volumes or other mounts.

Usage: compose_check.py FILE.json --devices a,b [--gateway URL] [--image REF]
                        [--key-dir DIR]
Exit status 0 when every check passed, 1 otherwise. Standard library only.
"""

import argparse
import json
import re
import sys

TOP_LEVEL_KEYS = {
    "version", "name", "include", "services", "networks", "volumes",
    "secrets", "configs", "models",
}

# Service attributes of the Compose Specification that this checker knows the
# type of. Anything else is reported as unknown.
SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file",
    "extra_hosts", "restart", "read_only", "user", "cap_add", "cap_drop",
    "security_opt", "labels", "network_mode", "networks", "pull_policy",
    "container_name", "hostname", "healthcheck", "depends_on", "ports",
    "expose", "volumes", "tmpfs", "devices", "privileged", "secrets",
    "configs", "working_dir", "stop_signal", "stop_grace_period", "init",
    "logging", "deploy", "profiles", "platform", "mem_limit", "cpus",
}

RESTART_VALUES = re.compile(r"^(no|always|unless-stopped|on-failure(:[0-9]+)?)$")
PULL_POLICIES = {"always", "never", "missing", "if_not_present", "build", "daily", "weekly"}
SERVICE_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EXTRA_HOST = re.compile(r"^[A-Za-z0-9.-]+[:=](host-gateway|[0-9a-fA-F:.\[\]]+)$")

# Things an agent must never be given: Kubernetes credentials or API access.
FORBIDDEN_SERVICE_KEYS = {"volumes", "tmpfs", "devices", "privileged", "secrets", "configs"}
FORBIDDEN_WORDS = re.compile(
    r"kubeconfig|serviceaccount|/var/run/secrets|\.kube/|KUBERNETES_SERVICE|bearer",
    re.IGNORECASE,
)
ALLOWED_ENV = {"APOLLO_DEVICE_NAME", "APOLLO_GATEWAY_URL"}


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)

    def is_str_list(self, value):
        return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_structure(c, doc):
    c.check(isinstance(doc, dict), "document is a mapping")
    if not isinstance(doc, dict):
        return
    for key in doc:
        c.check(key in TOP_LEVEL_KEYS or key.startswith("x-"), f"known top-level key {key!r}")
    if "name" in doc:
        c.check(isinstance(doc["name"], str) and PROJECT_NAME.match(doc["name"]) is not None,
                f"project name {doc.get('name')!r} is valid")
    services = doc.get("services")
    c.check(isinstance(services, dict) and len(services) > 0, "services is a non-empty mapping")
    if not isinstance(services, dict):
        return
    for name, svc in services.items():
        where = f"service {name!r}"
        c.check(SERVICE_NAME.match(name) is not None, f"{where}: valid service name")
        c.check(isinstance(svc, dict), f"{where}: is a mapping")
        if not isinstance(svc, dict):
            continue
        for key in svc:
            c.check(key in SERVICE_KEYS or key.startswith("x-"), f"{where}: known attribute {key!r}")
        c.check("image" in svc or "build" in svc, f"{where}: has image or build")
        if "image" in svc:
            c.check(isinstance(svc["image"], str) and svc["image"] != "", f"{where}: image is a string")
        env = svc.get("environment", {})
        if isinstance(env, dict):
            for k, v in env.items():
                c.check(ENV_NAME.match(k) is not None, f"{where}: environment name {k!r}")
                c.check(v is None or isinstance(v, (str, int, float, bool)),
                        f"{where}: environment {k} is a scalar")
        else:
            c.check(c.is_str_list(env), f"{where}: environment is a mapping or a list")
        if "env_file" in svc:
            ef = svc["env_file"]
            ok = isinstance(ef, str) or (isinstance(ef, list) and all(
                isinstance(e, str) or (isinstance(e, dict) and isinstance(e.get("path"), str))
                for e in ef))
            c.check(ok, f"{where}: env_file is a path or a list of paths")
        if "extra_hosts" in svc:
            eh = svc["extra_hosts"]
            c.check(c.is_str_list(eh) and all(EXTRA_HOST.match(h) for h in eh),
                    f"{where}: extra_hosts entries are host:address")
        if "restart" in svc:
            c.check(isinstance(svc["restart"], str) and RESTART_VALUES.match(svc["restart"]) is not None,
                    f"{where}: restart policy value")
        if "pull_policy" in svc:
            c.check(svc["pull_policy"] in PULL_POLICIES, f"{where}: pull_policy value")
        for key in ("read_only", "privileged", "init"):
            if key in svc:
                c.check(isinstance(svc[key], bool), f"{where}: {key} is a boolean")
        for key in ("cap_add", "cap_drop", "security_opt", "volumes", "tmpfs", "devices"):
            if key in svc:
                c.check(c.is_str_list(svc[key]) or isinstance(svc[key], list), f"{where}: {key} is a list")
        for key in ("user", "network_mode", "container_name", "hostname", "working_dir"):
            if key in svc:
                c.check(isinstance(svc[key], str), f"{where}: {key} is a string")
        if "labels" in svc:
            lb = svc["labels"]
            c.check((isinstance(lb, dict) and all(isinstance(v, str) for v in lb.values()))
                    or c.is_str_list(lb), f"{where}: labels are strings")


def check_policy(c, doc, devices, gateway, image, key_dir):
    services = doc.get("services", {}) if isinstance(doc, dict) else {}
    expected = {f"agent-{d}": d for d in devices}
    c.check(set(services) == set(expected),
            f"one service per device: expected {sorted(expected)}, got {sorted(services)}")
    c.check(not any(k in doc for k in ("volumes", "secrets", "configs")),
            "no top-level volumes, secrets or configs")
    for name, device in expected.items():
        svc = services.get(name)
        where = f"service {name!r}"
        if not isinstance(svc, dict):
            c.check(False, f"{where}: present")
            continue
        env = svc.get("environment", {})
        c.check(isinstance(env, dict) and set(env) == ALLOWED_ENV,
                f"{where}: environment is exactly {sorted(ALLOWED_ENV)}")
        if isinstance(env, dict):
            c.check(env.get("APOLLO_DEVICE_NAME") == device, f"{where}: APOLLO_DEVICE_NAME={device}")
            if gateway is not None:
                c.check(env.get("APOLLO_GATEWAY_URL") == gateway, f"{where}: APOLLO_GATEWAY_URL={gateway}")
            c.check("APOLLO_DEVICE_KEY" not in env and "APOLLO_DEVICE_TOKEN" not in env,
                    f"{where}: no device key in the compose file itself")
        c.check(svc.get("env_file") == [f"{key_dir}/{device}.env"],
                f"{where}: device key from env file {key_dir}/{device}.env")
        if image is not None:
            c.check(svc.get("image") == image, f"{where}: image {image}")
        c.check("host.docker.internal:host-gateway" in (svc.get("extra_hosts") or []),
                f"{where}: host.docker.internal:host-gateway in extra_hosts")
        c.check(isinstance(svc.get("restart"), str) and svc.get("restart") != "no",
                f"{where}: has a restart policy")
        c.check(svc.get("read_only") is True, f"{where}: read_only root filesystem")
        c.check(not any(k in svc for k in FORBIDDEN_SERVICE_KEYS),
                f"{where}: no volumes, tmpfs, devices, secrets, configs or privileged")
        c.check(FORBIDDEN_WORDS.search(json.dumps(svc)) is None,
                f"{where}: no Kubernetes credentials or service-account paths")
        c.check(svc.get("network_mode") != "host", f"{where}: not on the host network")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file")
    p.add_argument("--devices", required=True, help="comma-separated device names")
    p.add_argument("--gateway")
    p.add_argument("--image")
    p.add_argument("--key-dir", default="./keys")
    args = p.parse_args(argv)
    try:
        with open(args.file, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print(f"compose_check: cannot read {args.file}: {e}", file=sys.stderr)
        return 1
    devices = [d for d in args.devices.split(",") if d]
    c = Checker()
    check_structure(c, doc)
    check_policy(c, doc, devices, args.gateway, args.image, args.key_dir)
    for what in c.failed:
        print(f"compose_check: FAIL {what}", file=sys.stderr)
    print(f"compose_check {args.file}: {c.passed} checks passed, {len(c.failed)} failed")
    return 0 if not c.failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
