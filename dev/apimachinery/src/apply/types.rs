//! Types: how a schema node (or ObjectMeta, or no schema) says a value merges: struct, granular
//! map, atomic, list-map with keys, set.

use super::*;

/// The structured-merge-diff type of a position in the object.
#[derive(Debug, Clone, Copy)]
pub(crate) enum T<'a> {
    /// The object root (apiVersion, kind, metadata, and the schema's properties).
    Root(Option<&'a Node>),
    Node(&'a Node),
    Meta,
    StrMap,
    OwnerRefs,
    OwnerRef,
    StrSet,
    Atomic,
    Scalar,
    Deduced,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum ListKind<'a> {
    Set,
    /// Key fields and the item schema (for key defaults).
    Map(&'a [String], Option<&'a Node>),
    OwnerRefs,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind<'a> {
    Leaf,
    Map,
    List(ListKind<'a>),
}

pub(crate) const OBJECT_META: [&str; 15] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];
pub(crate) const OWNER_REF: [&str; 6] = [
    "apiVersion",
    "blockOwnerDeletion",
    "controller",
    "kind",
    "name",
    "uid",
];

impl<'a> T<'a> {
    /// The declared shape, before looking at values (Deduced is decided by the value).
    pub(crate) fn kind(self, v: Option<&Value>) -> Kind<'a> {
        match self {
            T::Root(_) | T::Meta | T::StrMap | T::OwnerRef => Kind::Map,
            T::OwnerRefs => Kind::List(ListKind::OwnerRefs),
            T::StrSet => Kind::List(ListKind::Set),
            T::Atomic | T::Scalar => Kind::Leaf,
            T::Deduced => match v {
                Some(Value::Object(_)) => Kind::Map,
                _ => Kind::Leaf,
            },
            T::Node(n) => {
                if n.int_or_string {
                    return Kind::Leaf;
                }
                let is_object = n.ty.as_deref() == Some("object")
                    || (n.ty.is_none()
                        && (!n.properties.is_empty() || n.additional.is_some() || n.embedded));
                let is_array =
                    n.ty.as_deref() == Some("array") || (n.ty.is_none() && n.items.is_some());
                if is_object {
                    if n.map_type.as_deref() == Some("atomic") {
                        Kind::Leaf
                    } else {
                        Kind::Map
                    }
                } else if is_array {
                    match n.list_type.as_deref() {
                        Some("set") => Kind::List(ListKind::Set),
                        Some("map") => {
                            Kind::List(ListKind::Map(&n.list_map_keys, n.items.as_deref()))
                        }
                        _ => Kind::Leaf,
                    }
                } else if n.ty.is_none() && n.preserve_unknown {
                    match v {
                        Some(Value::Object(_)) => Kind::Map,
                        _ => Kind::Leaf,
                    }
                } else {
                    Kind::Leaf
                }
            }
        }
    }

    /// The effective shape for the given values: structured only if every present value fits
    /// (`null` counts as an empty map or list, as in structured-merge-diff).
    pub(crate) fn kind_for(self, a: Option<&Value>, b: Option<&Value>) -> Kind<'a> {
        let k = self.kind(a.or(b));
        let fits = |v: Option<&Value>| {
            matches!(
                (k, v),
                (_, None)
                    | (Kind::Map, Some(Value::Object(_) | Value::Null))
                    | (Kind::List(_), Some(Value::Array(_) | Value::Null))
                    | (Kind::Leaf, _)
            )
        };
        if fits(a) && fits(b) { k } else { Kind::Leaf }
    }

    /// The type of map entry `key`.
    pub(crate) fn child(self, key: &str) -> T<'a> {
        match self {
            T::Root(schema) => match key {
                "apiVersion" | "kind" => T::Scalar,
                "metadata" => T::Meta,
                _ => match schema {
                    Some(n) => n.field(key).map(T::Node).unwrap_or(T::Deduced),
                    None => T::Deduced,
                },
            },
            T::Node(n) => {
                if n.embedded {
                    match key {
                        "apiVersion" | "kind" => return T::Scalar,
                        "metadata" => return T::Meta,
                        _ => {}
                    }
                }
                n.field(key).map(T::Node).unwrap_or(T::Deduced)
            }
            T::Meta => match key {
                "labels" | "annotations" => T::StrMap,
                "ownerReferences" => T::OwnerRefs,
                "finalizers" => T::StrSet,
                "managedFields" => T::Atomic,
                _ => T::Scalar,
            },
            T::StrMap | T::OwnerRef => T::Scalar,
            T::Deduced => T::Deduced,
            _ => T::Deduced,
        }
    }

    /// Whether `key` is a declared struct field (not a map entry).
    pub(crate) fn is_field(self, key: &str) -> bool {
        match self {
            // Without a schema (built-in kinds) every top-level field is taken as a declared
            // struct field, as the built-in types' OpenAPI schemas declare them.
            T::Root(schema) => {
                matches!(key, "apiVersion" | "kind" | "metadata")
                    || schema.is_none_or(|n| n.prop(key).is_some())
            }
            T::Node(n) => {
                (n.embedded && matches!(key, "apiVersion" | "kind" | "metadata"))
                    || n.prop(key).is_some()
            }
            T::Meta => OBJECT_META.contains(&key),
            T::OwnerRef => OWNER_REF.contains(&key),
            _ => false,
        }
    }

    /// The type of list items.
    pub(crate) fn elem(self) -> T<'a> {
        match self {
            T::Node(n) => n.items.as_deref().map(T::Node).unwrap_or(T::Deduced),
            T::OwnerRefs => T::OwnerRef,
            T::StrSet => T::Scalar,
            _ => T::Deduced,
        }
    }

    /// The type under path element `pe`.
    pub(crate) fn under(self, pe: &PE) -> T<'a> {
        match pe {
            PE::Field(f) => self.child(f),
            _ => self.elem(),
        }
    }
}

/// The path element of a list item (structured-merge-diff's listItemToPathElement): set
/// items are their value; list-map items their key fields, a missing key field taking the
/// schema default or being left out of the key.
pub(crate) fn item_pe(lk: ListKind<'_>, item: &Value) -> Result<PE, String> {
    let (keys, elem): (Vec<&str>, Option<&Node>) = match lk {
        ListKind::Set => {
            return match item {
                Value::Object(_) => {
                    Err("associative list without keys has an element that's a map type".into())
                }
                Value::Array(_) => {
                    Err("not supported: associative list with lists as elements".into())
                }
                Value::Null => Err(
                    "associative list without keys has an element that's an explicit null".into(),
                ),
                v => Ok(PE::Value(v.clone())),
            };
        }
        ListKind::OwnerRefs => (vec!["uid"], None),
        ListKind::Map(k, elem) => (k.iter().map(String::as_str).collect(), elem),
    };
    let m = match item {
        Value::Null => return Err("associative list with keys may not have a null element".into()),
        Value::Object(m) => m,
        _ => return Err("associative list with keys may not have non-map elements".into()),
    };
    let mut fields = Vec::new();
    for k in &keys {
        if let Some(v) = m.get(*k) {
            fields.push((k.to_string(), v.clone()));
        } else if let Some(d) = elem
            .and_then(|e| e.prop(k))
            .and_then(|p| p.default.as_ref())
        {
            fields.push((k.to_string(), d.clone()));
        }
    }
    if !keys.is_empty() && fields.is_empty() {
        let quoted: Vec<String> = keys.iter().map(|k| gofmt::quote(k)).collect();
        return Err(format!(
            "associative list with keys has an element that omits all key fields [{}] (and doesn't have default values for any key fields)",
            quoted.join(" ")
        ));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PE::Key(fields))
}

/// Item path elements, tolerating items without keys (as for live objects).
pub(crate) fn item_pe_lenient(lk: ListKind<'_>, item: &Value, index: usize) -> PE {
    item_pe(lk, item).unwrap_or(PE::Index(index))
}
