//! RemoveItems: taking the fields of a set out of a value (pruning what the applier no longer
//! owns).

use super::*;

/// Removes the paths in `set` (members remove the whole subtree), as structured-merge-diff
/// v6.3.2 (Kubernetes 1.36.0-1.36.2) does: a map or list that removal empties stays as `{}` /
/// `[]` (Kubernetes 1.35 and earlier, and SMD v6.3.3+/v6.4.2+, leave `null` there instead).
/// Returns `None` where the result is `null`.
pub(crate) fn remove_items(v: &Value, set: &Set, t: T<'_>) -> Option<Value> {
    // A container visited by removal keeps its kind even when emptied.
    let keep_kind = |orig: &Value, removed: Option<Value>| match removed {
        Some(x) => x,
        None => match orig {
            Value::Object(_) => Value::Object(Map::new()),
            Value::Array(_) => Value::Array(Vec::new()),
            _ => Value::Null,
        },
    };
    match (t.kind_for(Some(v), None), v) {
        (Kind::Map, Value::Object(m)) => {
            if m.is_empty() {
                return None;
            }
            let mut out = Map::new();
            let mut had_matches = false;
            for (k, child) in m {
                let pe = PE::Field(k.clone());
                if set.members.contains(&pe) {
                    continue;
                }
                let nv = match set.child(&pe) {
                    Some(sub) => {
                        had_matches = true;
                        keep_kind(child, remove_items(child, sub, t.child(k)))
                    }
                    None => child.clone(),
                };
                out.insert(k.clone(), nv);
            }
            (!out.is_empty() || had_matches).then_some(Value::Object(out))
        }
        (Kind::List(lk), Value::Array(items)) => {
            if items.is_empty() {
                return None;
            }
            let mut out = Vec::new();
            let mut had_matches = false;
            for (i, item) in items.iter().enumerate() {
                let pe = item_pe_lenient(lk, item, i);
                if set.members.contains(&pe) {
                    continue;
                }
                let nv = match set.child(&pe) {
                    Some(sub) => {
                        had_matches = true;
                        keep_kind(item, remove_items(item, sub, t.elem()))
                    }
                    None => item.clone(),
                };
                out.push(nv);
            }
            (!out.is_empty() || had_matches).then_some(Value::Array(out))
        }
        (Kind::Map | Kind::List(_), _) => None,
        (Kind::Leaf, _) => Some(v.clone()),
    }
}
