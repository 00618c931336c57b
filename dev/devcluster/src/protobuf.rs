//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for
//! the built-in kinds `kubectl create <kind>` and `kubectl auth can-i` send that way. The body is
//! the `k8s\0` envelope around a `runtime.Unknown` holding the typed object; it is decoded into
//! the JSON form the handlers work on. Responses are always JSON (clients accept it).

use base64::Engine;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum F {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    RepStr,
    RepMsg(&'static [Field]),
    MapStr,
    MapBytes,
}

struct Field {
    num: u64,
    name: &'static str,
    kind: F,
}

const fn f(num: u64, name: &'static str, kind: F) -> Field {
    Field { num, name, kind }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", F::Str),
    f(3, "name", F::Str),
    f(4, "uid", F::Str),
    f(5, "apiVersion", F::Str),
    f(6, "controller", F::Bool),
    f(7, "blockOwnerDeletion", F::Bool),
];
const OBJECT_META: &[Field] = &[
    f(1, "name", F::Str),
    f(2, "generateName", F::Str),
    f(3, "namespace", F::Str),
    f(5, "uid", F::Str),
    f(6, "resourceVersion", F::Str),
    f(7, "generation", F::Int),
    f(11, "labels", F::MapStr),
    f(12, "annotations", F::MapStr),
    f(13, "ownerReferences", F::RepMsg(OWNER_REF)),
    f(14, "finalizers", F::RepStr),
];
const NAMESPACE_SPEC: &[Field] = &[f(1, "finalizers", F::RepStr)];
const NAMESPACE: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "spec", F::Msg(NAMESPACE_SPEC)),
];
const SECRET: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "data", F::MapBytes),
    f(3, "type", F::Str),
    f(4, "stringData", F::MapStr),
    f(5, "immutable", F::Bool),
];
const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "data", F::MapStr),
    f(3, "binaryData", F::MapBytes),
    f(4, "immutable", F::Bool),
];
const OBJECT_REF: &[Field] = &[
    f(1, "kind", F::Str),
    f(2, "namespace", F::Str),
    f(3, "name", F::Str),
    f(4, "uid", F::Str),
    f(5, "apiVersion", F::Str),
    f(6, "resourceVersion", F::Str),
    f(7, "fieldPath", F::Str),
];
const LOCAL_OBJECT_REF: &[Field] = &[f(1, "name", F::Str)];
const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "secrets", F::RepMsg(OBJECT_REF)),
    f(3, "imagePullSecrets", F::RepMsg(LOCAL_OBJECT_REF)),
    f(4, "automountServiceAccountToken", F::Bool),
];
const RESOURCE_ATTRIBUTES: &[Field] = &[
    f(1, "namespace", F::Str),
    f(2, "verb", F::Str),
    f(3, "group", F::Str),
    f(4, "version", F::Str),
    f(5, "resource", F::Str),
    f(6, "subresource", F::Str),
    f(7, "name", F::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[f(1, "path", F::Str), f(2, "verb", F::Str)];
const SSAR_SPEC: &[Field] = &[
    f(1, "resourceAttributes", F::Msg(RESOURCE_ATTRIBUTES)),
    f(2, "nonResourceAttributes", F::Msg(NON_RESOURCE_ATTRIBUTES)),
];
const SSAR: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "spec", F::Msg(SSAR_SPEC)),
];
const SSRR_SPEC: &[Field] = &[f(1, "namespace", F::Str)];
const SSRR: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "spec", F::Msg(SSRR_SPEC)),
];
const POLICY_RULE: &[Field] = &[
    f(1, "verbs", F::RepStr),
    f(2, "apiGroups", F::RepStr),
    f(3, "resources", F::RepStr),
    f(4, "resourceNames", F::RepStr),
    f(5, "nonResourceURLs", F::RepStr),
];
const ROLE: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "rules", F::RepMsg(POLICY_RULE)),
];
const SUBJECT: &[Field] = &[
    f(1, "kind", F::Str),
    f(2, "apiGroup", F::Str),
    f(3, "name", F::Str),
    f(4, "namespace", F::Str),
];
const ROLE_REF: &[Field] = &[
    f(1, "apiGroup", F::Str),
    f(2, "kind", F::Str),
    f(3, "name", F::Str),
];
const ROLE_BINDING: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "subjects", F::RepMsg(SUBJECT)),
    f(3, "roleRef", F::Msg(ROLE_REF)),
];
const LEASE_SPEC: &[Field] = &[
    f(1, "holderIdentity", F::Str),
    f(2, "leaseDurationSeconds", F::Int),
    f(3, "acquireTime", F::Time),
    f(4, "renewTime", F::Time),
    f(5, "leaseTransitions", F::Int),
];
const LEASE: &[Field] = &[
    f(1, "metadata", F::Msg(OBJECT_META)),
    f(2, "spec", F::Msg(LEASE_SPEC)),
];
const DELETE_OPTIONS: &[Field] = &[
    f(1, "gracePeriodSeconds", F::Int),
    f(3, "orphanDependents", F::Bool),
    f(4, "propagationPolicy", F::Str),
];

fn schema_for(kind: &str) -> Option<&'static [Field]> {
    Some(match kind {
        "Namespace" => NAMESPACE,
        "Secret" => SECRET,
        "ConfigMap" => CONFIG_MAP,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "SelfSubjectAccessReview" => SSAR,
        "SelfSubjectRulesReview" => SSRR,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => ROLE_BINDING,
        "Lease" => LEASE,
        "DeleteOptions" => DELETE_OPTIONS,
        _ => return None,
    })
}

/// One decoded field: number and payload (varint/fixed as Ok, length-delimited as Err).
type Item<'a> = (u64, Result<u64, &'a [u8]>);

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i)?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.i.checked_add(len)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }

    /// Next (field number, wire type, payload): varints as Ok(u64), length-delimited as Err(bytes).
    fn next(&mut self) -> Option<Option<Item<'a>>> {
        if self.i >= self.b.len() {
            return Some(None);
        }
        let key = self.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        let payload = match wire {
            0 => Ok(self.varint()?),
            1 => {
                let end = self.i.checked_add(8)?;
                let s = self.b.get(self.i..end)?;
                self.i = end;
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                Ok(u64::from_le_bytes(a))
            }
            2 => Err(self.bytes()?),
            5 => {
                let end = self.i.checked_add(4)?;
                let s = self.b.get(self.i..end)?;
                self.i = end;
                let mut a = [0u8; 4];
                a.copy_from_slice(s);
                Ok(u64::from(u32::from_le_bytes(a)))
            }
            _ => return None,
        };
        Some(Some((num, payload)))
    }
}

fn string(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn time(b: &[u8]) -> Option<Value> {
    let mut r = Reader { b, i: 0 };
    let mut secs = 0i64;
    while let Some((num, p)) = r.next()? {
        if let (1, Ok(v)) = (num, p) {
            secs = v as i64;
        }
    }
    let ts = jiff::Timestamp::from_second(secs).ok()?;
    Some(Value::String(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), json!(""));
    while let Some((num, p)) = r.next()? {
        match (num, p) {
            (1, Err(s)) => k = String::from_utf8_lossy(s).into_owned(),
            (2, Err(s)) if bytes_value => {
                v = json!(base64::engine::general_purpose::STANDARD.encode(s))
            }
            (2, Err(s)) => v = string(s),
            _ => {}
        }
    }
    Some((k, v))
}

fn message(b: &[u8], schema: &[Field]) -> Option<Value> {
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    while let Some((num, p)) = r.next()? {
        let Some(field) = schema.iter().find(|f| f.num == num) else {
            continue;
        };
        let name = field.name.to_string();
        match (field.kind, p) {
            // Proto3 writes zero values; the JSON form omits them (omitempty).
            (F::Str, Err([])) => {}
            (F::Int, Ok(0)) | (F::Bool, Ok(0)) => {}
            (F::Str, Err(s)) => {
                out.insert(name, string(s));
            }
            (F::Int, Ok(v)) => {
                out.insert(name, json!(v as i64));
            }
            (F::Bool, Ok(v)) => {
                out.insert(name, json!(v != 0));
            }
            (F::Time, Err(s)) => {
                out.insert(name, time(s)?);
            }
            (F::Msg(sub), Err(s)) => {
                out.insert(name, message(s, sub)?);
            }
            (F::RepStr, Err(s)) => {
                let e = out.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = e.as_array_mut() {
                    a.push(string(s));
                }
            }
            (F::RepMsg(sub), Err(s)) => {
                let v = message(s, sub)?;
                let e = out.entry(name).or_insert_with(|| json!([]));
                if let Some(a) = e.as_array_mut() {
                    a.push(v);
                }
            }
            (F::MapStr, Err(s)) | (F::MapBytes, Err(s)) => {
                let (k, v) = map_entry(s, matches!(field.kind, F::MapBytes))?;
                let e = out.entry(name).or_insert_with(|| json!({}));
                if let Some(m) = e.as_object_mut() {
                    m.insert(k, v);
                }
            }
            _ => return None,
        }
    }
    Some(Value::Object(out))
}

/// Decodes an enveloped protobuf body; None when it is not one or its kind is not supported.
pub(crate) fn decode(body: &[u8]) -> Option<Value> {
    let rest = body.strip_prefix(b"k8s\0")?;
    let mut r = Reader { b: rest, i: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((num, p)) = r.next()? {
        match (num, p) {
            (1, Err(tm)) => {
                let mut t = Reader { b: tm, i: 0 };
                while let Some((n, p)) = t.next()? {
                    match (n, p) {
                        (1, Err(s)) => api_version = String::from_utf8_lossy(s).into_owned(),
                        (2, Err(s)) => kind = String::from_utf8_lossy(s).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Err(s)) => raw = s,
            _ => {}
        }
    }
    let schema = schema_for(&kind)?;
    let mut obj = message(raw, schema)?;
    if let Some(m) = obj.as_object_mut() {
        if !api_version.is_empty() {
            m.insert("apiVersion".into(), json!(api_version));
        }
        m.insert("kind".into(), json!(kind));
    }
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((num << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let meta = [
            field(1, b"foo"),
            field(11, &[field(1, b"a"), field(2, b"b")].concat()),
        ]
        .concat();
        let ns = field(1, &meta);
        let type_meta = [field(1, b"v1"), field(2, b"Namespace")].concat();
        let unknown = [field(1, &type_meta), field(2, &ns)].concat();
        let body = [b"k8s\0".as_slice(), &unknown].concat();
        let v = decode(&body).unwrap();
        assert_eq!(v["kind"], "Namespace");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["metadata"]["name"], "foo");
        assert_eq!(v["metadata"]["labels"]["a"], "b");
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for body in [
            &b"k8s\0\xff\xff\xff"[..],
            b"k8s\0\x0a\x7f",
            b"nope",
            b"k8s\0\x12\x05abc",
        ] {
            let _ = decode(body);
        }
    }
}
