//! Defaulting: schema defaults applied where a value is absent (or null and not nullable).

use super::*;

pub(crate) fn is_non_nullable_null(x: &Value, s: &Node) -> bool {
    x.is_null() && !s.nullable
}

pub(crate) fn default_value(x: &mut Value, s: &Node) {
    match x {
        Value::Object(m) => {
            for (k, prop) in &s.properties {
                let Some(d) = &prop.default else { continue };
                let missing = match m.get(k) {
                    None => true,
                    Some(v) => is_non_nullable_null(v, prop),
                };
                if missing {
                    m.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in m.iter_mut() {
                if let Some(prop) = s.prop(k) {
                    default_value(v, prop);
                } else if let Some(add) = s.additional.as_deref() {
                    if is_non_nullable_null(v, add)
                        && let Some(d) = &add.default
                    {
                        *v = d.clone();
                    }
                    default_value(v, add);
                }
            }
        }
        Value::Array(a) => {
            let Some(items) = s.items.as_deref() else {
                return;
            };
            for v in a.iter_mut() {
                if is_non_nullable_null(v, items)
                    && let Some(d) = &items.default
                {
                    *v = d.clone();
                }
                default_value(v, items);
            }
        }
        _ => {}
    }
}
