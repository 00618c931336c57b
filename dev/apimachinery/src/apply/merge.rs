//! Merge: an applied configuration into the live object, per type (maps per key, list-maps per
//! item key, sets as unions, the rest replaced).

use super::*;

pub(crate) fn merge(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    t: T<'_>,
) -> Result<Option<Value>, ApplyError> {
    let mut path = Vec::new();
    merge_at(lhs, rhs, t, &mut path).map_err(ApplyError::Invalid)
}

pub(crate) fn merge_at(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    t: T<'_>,
    path: &mut Vec<PE>,
) -> Result<Option<Value>, String> {
    let kind = t.kind_for(lhs, rhs);
    let empty_promote = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    match kind {
        Kind::Leaf => Ok(rhs.or(lhs).cloned()),
        _ if empty_promote(lhs) && empty_promote(rhs) => Ok(rhs.or(lhs).cloned()),
        Kind::Map => {
            let empty = Map::new();
            let lm = lhs.and_then(Value::as_object).unwrap_or(&empty);
            let rm = rhs.and_then(Value::as_object).unwrap_or(&empty);
            let mut out = Map::new();
            for (k, lv) in lm {
                path.push(PE::Field(k.clone()));
                if let Some(v) = merge_at(Some(lv), rm.get(k), t.child(k), path)? {
                    out.insert(k.clone(), v);
                }
                path.pop();
            }
            for (k, rv) in rm {
                if lm.contains_key(k) {
                    continue;
                }
                path.push(PE::Field(k.clone()));
                if let Some(v) = merge_at(None, Some(rv), t.child(k), path)? {
                    out.insert(k.clone(), v);
                }
                path.pop();
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        Kind::List(lk) => merge_list(lhs, rhs, lk, t, path),
    }
}

pub(crate) fn merge_list(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    lk: ListKind<'_>,
    t: T<'_>,
    path: &mut Vec<PE>,
) -> Result<Option<Value>, String> {
    let empty = Vec::new();
    let l = lhs.and_then(Value::as_array).unwrap_or(&empty);
    let r = rhs.and_then(Value::as_array).unwrap_or(&empty);
    // rhs: no duplicates allowed
    let mut rhs_pes: Vec<PE> = Vec::new();
    let mut observed_rhs: Vec<(PE, &Value)> = Vec::new();
    for (i, item) in r.iter().enumerate() {
        let pe =
            item_pe(lk, item).map_err(|e| format!("{}: element {i}: {e}", path_string(path)))?;
        if observed_rhs.iter().any(|(p, _)| *p == pe) {
            return Err(format!(
                "{}: duplicate entries for key {}",
                path_string(path),
                pe.display()
            ));
        }
        observed_rhs.push((pe.clone(), item));
        rhs_pes.push(pe);
    }
    // lhs: duplicates tolerated; a duplicated key is observed as null (so an applied item
    // with that key replaces all of them), as in structured-merge-diff.
    let null = Value::Null;
    let mut lhs_pes: Vec<PE> = Vec::new();
    let mut observed_lhs: Vec<(PE, &Value)> = Vec::new();
    for (i, item) in l.iter().enumerate() {
        let pe = item_pe_lenient(lk, item, i);
        match observed_lhs.iter_mut().find(|(p, _)| *p == pe) {
            Some(e) => e.1 = &null,
            None => observed_lhs.push((pe.clone(), item)),
        }
        lhs_pes.push(pe);
    }
    let get = |obs: &Vec<(PE, &Value)>, pe: &PE| -> Option<Value> {
        obs.iter().find(|(p, _)| p == pe).map(|(_, v)| (*v).clone())
    };
    let mut shared: std::collections::VecDeque<PE> = rhs_pes
        .iter()
        .filter(|pe| observed_lhs.iter().any(|(p, _)| p == *pe))
        .cloned()
        .collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: Vec<PE> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    let elem = t.elem();
    let (l_len, r_len) = (lhs_pes.len(), rhs_pes.len());
    let (mut li, mut ri) = (0usize, 0usize);
    let mut guard = 0usize;
    while li < l_len || ri < r_len {
        guard += 1;
        if guard > 4 * (l_len + r_len) + 8 {
            break;
        }
        if li < l_len && ri < r_len {
            let pe = lhs_pes[li].clone();
            if pe == rhs_pes[ri] {
                merged_rhs.push(pe.clone());
                path.push(pe.clone());
                let m = merge_at(
                    get(&observed_lhs, &pe).as_ref(),
                    get(&observed_rhs, &pe).as_ref(),
                    elem,
                    path,
                )?;
                path.pop();
                out.push(m.unwrap_or(Value::Null));
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            let in_rhs = observed_rhs.iter().any(|(p, _)| *p == pe);
            if in_rhs && next_shared.as_ref().is_some_and(|n| *n != pe) {
                li += 1;
                continue;
            }
        }
        if li < l_len {
            let pe = lhs_pes[li].clone();
            if !observed_rhs.iter().any(|(p, _)| *p == pe) {
                path.push(pe.clone());
                let m = merge_at(Some(&l[li]), None, elem, path)?;
                path.pop();
                out.push(m.unwrap_or(Value::Null));
                li += 1;
                continue;
            } else if merged_rhs.contains(&pe) {
                li += 1;
            }
        }
        if ri < r_len {
            let pe = rhs_pes[ri].clone();
            merged_rhs.push(pe.clone());
            path.push(pe.clone());
            let m = merge_at(
                get(&observed_lhs, &pe).as_ref(),
                get(&observed_rhs, &pe).as_ref(),
                elem,
                path,
            )?;
            path.pop();
            out.push(m.unwrap_or(Value::Null));
            ri += 1;
            if next_shared.as_ref() == Some(&pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    Ok((!out.is_empty()).then_some(Value::Array(out)))
}
