//! Compare: which fields two values add, change and remove (the input of ownership updates and
//! conflicts).

use super::*;

pub(crate) fn compare(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    t: T<'_>,
) -> Result<Comparison, ApplyError> {
    let mut c = Comparison {
        added: Set::default(),
        modified: Set::default(),
        removed: Set::default(),
    };
    compare_at(lhs, rhs, t, &mut Vec::new(), &mut c);
    Ok(c)
}

pub(crate) fn compare_at(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    t: T<'_>,
    path: &mut Vec<PE>,
    c: &mut Comparison,
) {
    let kind = t.kind_for(lhs, rhs);
    let empty_promote = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    let leaf = matches!(kind, Kind::Leaf) || (empty_promote(lhs) && empty_promote(rhs));
    if leaf {
        match (lhs, rhs) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(a), Some(b)) if a != b => c.modified.insert(path),
            _ => {}
        }
        return;
    }
    match kind {
        Kind::Map => {
            let empty = Map::new();
            let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
            for (k, lv) in lm {
                path.push(PE::Field(k.clone()));
                compare_at(Some(lv), rm.get(k), t.child(k), path, c);
                path.pop();
            }
            for (k, rv) in rm {
                if !lm.contains_key(k) {
                    path.push(PE::Field(k.clone()));
                    compare_at(None, Some(rv), t.child(k), path, c);
                    path.pop();
                }
            }
        }
        Kind::List(lk) => {
            let empty = Vec::new();
            let l = lhs.and_then(Value::as_array).unwrap_or(&empty);
            let r = rhs.and_then(Value::as_array).unwrap_or(&empty);
            let mut all: Vec<PE> = Vec::new();
            let mut lv: Vec<(PE, Vec<&Value>)> = Vec::new();
            for (i, item) in l.iter().enumerate() {
                let pe = item_pe_lenient(lk, item, i);
                match lv.iter_mut().find(|(p, _)| *p == pe) {
                    Some(e) => e.1.push(item),
                    None => {
                        lv.push((pe.clone(), vec![item]));
                        all.push(pe);
                    }
                }
            }
            let mut rv: Vec<(PE, Vec<&Value>)> = Vec::new();
            for (i, item) in r.iter().enumerate() {
                let pe = item_pe_lenient(lk, item, i);
                match rv.iter_mut().find(|(p, _)| *p == pe) {
                    Some(e) => e.1.push(item),
                    None => {
                        if !lv.iter().any(|(p, _)| *p == pe) {
                            all.push(pe.clone());
                        }
                        rv.push((pe, vec![item]));
                    }
                }
            }
            let elem = t.elem();
            for pe in all {
                let ll = lv
                    .iter()
                    .find(|(p, _)| *p == pe)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let rl = rv
                    .iter()
                    .find(|(p, _)| *p == pe)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                path.push(pe);
                match (ll.len(), rl.len()) {
                    (a, b) if a <= 1 && b <= 1 => {
                        compare_at(ll.first().copied(), rl.first().copied(), elem, path, c)
                    }
                    (a, b) if a >= 2 && b >= 2 => {
                        if ll != rl {
                            c.modified.insert(path);
                        }
                    }
                    (a, _) if a >= 2 => {
                        if let Some(r0) = rl.first() {
                            compare_at(None, Some(r0), elem, path, c);
                        }
                        c.removed.insert(path);
                    }
                    _ => {
                        if let Some(l0) = ll.first() {
                            compare_at(Some(l0), None, elem, path, c);
                        }
                        c.added.insert(path);
                    }
                }
                path.pop();
            }
        }
        Kind::Leaf => {}
    }
    // A node present on one side only is itself added/removed.
    match (lhs, rhs) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        _ => {}
    }
}
