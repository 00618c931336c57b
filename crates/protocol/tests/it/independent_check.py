#!/usr/bin/env python3
"""An independent implementation of Apollo protocol v1 with signature versions v1 and v2 (Python standard library only),
written from docs/PROTOCOL.md, that recomputes every `apollo-vector` in that document: device
keys, requests, responses, desired documents, and (section 10) the replica key and the
signature of requests between gateway replicas.

It shows that the specification is enough to implement an agent in another language; the
Rust test `independent_check` runs it when python3 is available.
Usage: independent_check.py docs/PROTOCOL.md  (exit status 0 = every vector matches)
"""

import base64
import hashlib
import hmac
import json
import re
import sys


def unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def derive(master_text, device, epoch=0):
    prefix, key_id, secret = master_text.split(":")
    assert prefix == "apollo-mk1"
    message = b"apollo-device-key/v1\x00" + device.encode()
    if epoch:
        message += b"\x00" + str(epoch).encode()
        key_id = "%s.%d" % (key_id, epoch)
    return key_id, hmac.new(unb64(secret), message, hashlib.sha256).digest()


def replica_key(master_text):
    prefix, key_id, secret = master_text.split(":")
    assert prefix == "apollo-mk1"
    return key_id, hmac.new(unb64(secret), b"apollo-replica-key/v1\x00", hashlib.sha256).digest()


def canonical_replica_request(method, path_and_query, ts, nonce, body, sender, key_id):
    return "\n".join(["APOLLO-HMAC-SHA256-REPLICA", method, path_and_query, ts, nonce,
                      sha256_hex(body), sender, key_id, "v1"])


def parse_device_key(text):
    prefix, key_id, device, secret = text.split(":")
    assert prefix == "apollo-dk1"
    return key_id, device, unb64(secret)


def canonical_request(method, path_and_query, ts, nonce, body, device, key_id, version, inm):
    lines = ["APOLLO-HMAC-SHA256-REQUEST", method, path_and_query, ts, nonce, sha256_hex(body),
             device, key_id]
    return "\n".join(lines + ([inm] if version == "v2" else []) + [version])


def canonical_response(status, nonce, etag, body, device, key_id, version, inm):
    lines = ["APOLLO-HMAC-SHA256-RESPONSE", status, nonce, etag, sha256_hex(body), device, key_id]
    return "\n".join(lines + ([inm] if version == "v2" else []) + [version])


def sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def sort_keys(value):
    if isinstance(value, dict):
        return {k: sort_keys(value[k]) for k in sorted(value, key=lambda k: k.encode())}
    if isinstance(value, list):
        return [sort_keys(v) for v in value]
    return value


def encode_document(device, processes):
    processes = sorted(processes, key=lambda p: (p["namespace"], p["name"]))
    processes = [{"namespace": p["namespace"], "name": p["name"], "generation": p["generation"],
                  "specHash": p["specHash"], "spec": sort_keys(p["spec"])} for p in processes]
    dump = lambda o: json.dumps(o, separators=(",", ":"), ensure_ascii=False)
    revision = sha256_hex(dump({"device": device, "processes": processes}).encode())[:32]
    body = dump({"device": device, "revision": revision, "processes": processes})
    return revision, '"%s"' % revision, body


def unescape(value):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\"}[m.group(1)], value)


def vectors(doc):
    for block in re.findall(r"```apollo-vector\n(.*?)\n```", doc, flags=re.S):
        fields = {}
        for line in block.split("\n"):
            key, _, value = line.partition(":")
            fields[key.strip()] = unescape(value[1:] if value.startswith(" ") else value)
        yield fields


def check(v):
    expected = {}
    kind = v["kind"]
    if kind == "device-key":
        key_id, key = derive(v["master_key"], v["device"], int(v.get("epoch") or 0))
        expected["device_key_hex"] = key.hex()
        expected["device_key"] = "apollo-dk1:%s:%s:%s" % (key_id, v["device"], b64(key))
    elif kind == "request":
        key_id, device, key = parse_device_key(v["device_key"])
        if "master_key" in v:
            epoch = int(key_id.split(".")[1]) if "." in key_id else 0
            assert derive(v["master_key"], device, epoch) == (key_id, key), "device key vs master"
        body = v["body"].encode()
        canonical = canonical_request(v["method"], v["path_and_query"], v["timestamp"],
                                      v["nonce"], body, device, key_id,
                                      v.get("auth_version") or "v1", v.get("if_none_match", ""))
        expected["body_sha256"] = sha256_hex(body)
        expected["canonical_request"] = canonical
        expected["signature"] = sign(key, canonical)
    elif kind == "response":
        key_id, device, key = parse_device_key(v["device_key"])
        body = v["body"].encode()
        canonical = canonical_response(v["status"], v["request_nonce"], v["etag"], body,
                                       device, key_id, v.get("auth_version") or "v1",
                                       v.get("request_if_none_match", ""))
        expected["body_sha256"] = sha256_hex(body)
        expected["canonical_response"] = canonical
        expected["signature"] = sign(key, canonical)
    elif kind == "document":
        revision, etag, body = encode_document(v["device"], json.loads(v["processes"]))
        expected.update(revision=revision, etag=etag, encoded_body=body)
    elif kind == "replica-key":
        expected["replica_key_hex"] = replica_key(v["master_key"])[1].hex()
    elif kind == "replica-request":
        key_id, key = replica_key(v["master_key"])
        body = v["body"].encode()
        canonical = canonical_replica_request(v["method"], v["path_and_query"], v["timestamp"],
                                              v["nonce"], body, v["sender"], key_id)
        expected["replica_key_hex"] = key.hex()
        expected["body_sha256"] = sha256_hex(body)
        expected["canonical_request"] = canonical
        expected["signature"] = sign(key, canonical)
    else:
        return ["unknown kind %r" % kind]
    return ["%s.%s: doc %r, computed %r" % (v["name"], k, v.get(k), x)
            for k, x in expected.items() if v.get(k) != x]


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        all_vectors = list(vectors(f.read()))
    failures = [msg for v in all_vectors for msg in check(v)]
    for msg in failures:
        print(msg)
    print("%d vectors, %d mismatches" % (len(all_vectors), len(failures)))
    return 1 if failures or not all_vectors else 0


if __name__ == "__main__":
    sys.exit(main())
