//! ToFieldSet: the set of fields a value sets, as structured-merge-diff computes it.

use super::*;

pub(crate) fn to_field_set(v: &Value, t: T<'_>) -> Result<Set, ApplyError> {
    let mut set = Set::default();
    walk_field_set(v, t, &mut Vec::new(), &mut set, true).map_err(ApplyError::Invalid)?;
    Ok(set)
}

pub(crate) fn to_field_set_lenient(v: &Value, t: T<'_>) -> Set {
    let mut set = Set::default();
    let _ = walk_field_set(v, t, &mut Vec::new(), &mut set, false);
    set
}

pub(crate) fn walk_field_set(
    v: &Value,
    t: T<'_>,
    path: &mut Vec<PE>,
    set: &mut Set,
    strict: bool,
) -> Result<(), String> {
    match (t.kind_for(Some(v), None), v) {
        (Kind::Map, Value::Object(m)) => {
            for (k, child) in m {
                let pe = PE::Field(k.clone());
                path.push(pe);
                walk_field_set(child, t.child(k), path, set, strict)?;
                let empty_map = matches!(child, Value::Object(o) if o.is_empty());
                if child.is_null() || empty_map || !t.is_field(k) {
                    set.insert(path);
                }
                path.pop();
            }
        }
        (Kind::List(lk), Value::Array(items)) => {
            let mut pes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let pe = if strict {
                    item_pe(lk, item)
                        .map_err(|e| format!("{}: element {i}: {e}", path_string(path)))?
                } else {
                    item_pe_lenient(lk, item, i)
                };
                pes.push(pe);
            }
            let mut dups: BTreeSet<PE> = BTreeSet::new();
            for (i, pe) in pes.iter().enumerate() {
                if pes[..i].contains(pe) && dups.insert(pe.clone()) {
                    if strict {
                        return Err(format!(
                            "{}: duplicate entries for key {}",
                            path_string(path),
                            pe.display()
                        ));
                    }
                    path.push(pe.clone());
                    set.insert(path);
                    path.pop();
                }
            }
            for (item, pe) in items.iter().zip(&pes) {
                if dups.contains(pe) {
                    continue;
                }
                path.push(pe.clone());
                walk_field_set(item, t.elem(), path, set, strict)?;
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
    Ok(())
}

/// EnsureNamedFieldsAreMembers: struct fields with owned children become members too.
pub(crate) fn ensure_named(s: &Set, t: T<'_>) -> Set {
    let mut out = Set {
        members: s.members.clone(),
        ..Set::default()
    };
    for (pe, c) in &s.children {
        if let PE::Field(f) = pe
            && t.is_field(f)
        {
            out.members.insert(pe.clone());
        }
        out.children
            .insert(pe.clone(), ensure_named(c, t.under(pe)));
    }
    out
}
