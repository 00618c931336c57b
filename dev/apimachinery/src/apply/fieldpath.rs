//! Field paths and sets: path elements (`f:`, `k:`, `v:`, `i:`) with structured-merge-diff's
//! order, and the trie of owned fields (FieldsV1).

use super::*;

/// A path element: `f:name`, `k:{"type":"Ready"}`, `v:"value"`, `i:0`.
#[derive(Debug, Clone)]
pub(crate) enum PE {
    Field(String),
    Key(Vec<(String, Value)>),
    Value(Value),
    Index(usize),
}

pub(crate) fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

/// structured-merge-diff's total order of values.
pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) if !x.is_f64() && !y.is_f64() => i.cmp(&j),
            _ => x
                .as_f64()
                .unwrap_or(0.0)
                .partial_cmp(&y.as_f64().unwrap_or(0.0))
                .unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        let c = compare_values(p, q);
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                    (None, Some(_)) => return Ordering::Greater,
                    (Some(_), None) => return Ordering::Less,
                    (None, None) => {}
                }
            }
            Ordering::Equal
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

impl Ord for PE {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PE::Field(a), PE::Field(b)) => a.as_bytes().cmp(b.as_bytes()),
            (PE::Field(_), _) => Ordering::Less,
            (_, PE::Field(_)) => Ordering::Greater,
            (PE::Key(a), PE::Key(b)) => {
                for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                    let c = ka
                        .as_bytes()
                        .cmp(kb.as_bytes())
                        .then_with(|| compare_values(va, vb));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PE::Key(_), _) => Ordering::Less,
            (_, PE::Key(_)) => Ordering::Greater,
            (PE::Value(a), PE::Value(b)) => compare_values(a, b),
            (PE::Value(_), _) => Ordering::Less,
            (_, PE::Value(_)) => Ordering::Greater,
            (PE::Index(a), PE::Index(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for PE {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PE {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PE {}

/// value.ToString of structured-merge-diff.
pub(crate) fn smd_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Number(n) => gofmt::number(n),
        Value::String(s) => gofmt::quote(s),
        Value::Bool(b) => b.to_string(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(smd_to_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", smd_to_string(v)))
            .collect::<Vec<_>>()
            .join(""),
    }
}

impl PE {
    /// The `String()` form used in conflict messages.
    pub(crate) fn display(&self) -> String {
        match self {
            PE::Field(f) => format!(".{f}"),
            PE::Key(k) => {
                let parts: Vec<String> = k
                    .iter()
                    .map(|(n, v)| format!("{n}={}", smd_to_string(v)))
                    .collect();
                format!("[{}]", parts.join(","))
            }
            PE::Value(v) => format!("[={}]", smd_to_string(v)),
            PE::Index(i) => format!("[{i}]"),
        }
    }

    /// The FieldsV1 key form.
    pub(crate) fn serialize(&self) -> String {
        match self {
            PE::Field(f) => format!("f:{f}"),
            PE::Key(k) => {
                let parts: Vec<String> = k
                    .iter()
                    .map(|(n, v)| {
                        format!(
                            "{}:{}",
                            gofmt::json(&Value::String(n.clone())),
                            gofmt::json(v)
                        )
                    })
                    .collect();
                format!("k:{{{}}}", parts.join(","))
            }
            PE::Value(v) => format!("v:{}", gofmt::json(v)),
            PE::Index(i) => format!("i:{i}"),
        }
    }

    pub(crate) fn deserialize(s: &str) -> Result<Option<PE>, String> {
        if s.len() < 2 {
            return Err("key must be 2 characters long".into());
        }
        let (kind, rest) = s.split_at(2);
        Ok(Some(match kind {
            "f:" => PE::Field(rest.to_string()),
            "v:" => PE::Value(
                serde_json::from_str(rest)
                    .map_err(|e| format!("parsing key as path element: {e}"))?,
            ),
            "k:" => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| format!("parsing key as path element: {e}"))?;
                let Value::Object(m) = v else {
                    return Err("parsing key as path element: key must be an object".into());
                };
                let mut fields: Vec<(String, Value)> = m.into_iter().collect();
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PE::Key(fields)
            }
            "i:" => PE::Index(
                rest.parse()
                    .map_err(|e| format!("parsing key as path element: {e}"))?,
            ),
            _ if kind.ends_with(':') => return Ok(None),
            _ => return Err(format!("missing colon: {s}")),
        }))
    }
}

pub(crate) fn path_string(p: &[PE]) -> String {
    p.iter().map(PE::display).collect()
}

/// A set of field paths (structured-merge-diff `fieldpath.Set`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Set {
    pub(crate) members: BTreeSet<PE>,
    pub(crate) children: BTreeMap<PE, Set>,
}

impl Set {
    pub(crate) fn insert(&mut self, path: &[PE]) {
        match path {
            [] => {}
            [pe] => {
                self.members.insert(pe.clone());
            }
            [pe, rest @ ..] => self.children.entry(pe.clone()).or_default().insert(rest),
        }
    }

    #[cfg(test)]
    pub(crate) fn has(&self, path: &[PE]) -> bool {
        match path {
            [] => false,
            [pe] => self.members.contains(pe),
            [pe, rest @ ..] => self.children.get(pe).is_some_and(|c| c.has(rest)),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.values().all(Set::is_empty)
    }

    pub(crate) fn child(&self, pe: &PE) -> Option<&Set> {
        self.children.get(pe).filter(|c| !c.is_empty())
    }

    pub(crate) fn union(&self, o: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(o.members.iter().cloned());
        for (pe, c) in &o.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out.children.retain(|_, c| !c.is_empty());
        out
    }

    pub(crate) fn intersection(&self, o: &Set) -> Set {
        let mut out = Set {
            members: self.members.intersection(&o.members).cloned().collect(),
            ..Set::default()
        };
        for (pe, c) in &self.children {
            if let Some(oc) = o.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Non-recursive difference: a member of `o` does not remove children of `self`.
    pub(crate) fn difference(&self, o: &Set) -> Set {
        let mut out = Set {
            members: self.members.difference(&o.members).cloned().collect(),
            ..Set::default()
        };
        for (pe, c) in &self.children {
            let d = match o.children.get(pe) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    /// All member paths: members first, then children, each in order.
    pub(crate) fn paths(&self) -> Vec<Vec<PE>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    pub(crate) fn collect(&self, prefix: &mut Vec<PE>, out: &mut Vec<Vec<PE>>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    pub(crate) fn to_fields_v1(&self) -> Value {
        Value::Object(self.emit(false))
    }

    pub(crate) fn emit(&self, include_self: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if include_self && !(self.members.is_empty() && self.children.is_empty()) {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        let mut keys: BTreeSet<&PE> = self.members.iter().collect();
        keys.extend(self.children.keys().filter(|k| self.child(k).is_some()));
        for pe in keys {
            let is_member = self.members.contains(pe);
            let v = match self.child(pe) {
                Some(c) => Value::Object(c.emit(is_member)),
                None => Value::Object(Map::new()),
            };
            m.insert(pe.serialize(), v);
        }
        m
    }

    pub(crate) fn from_fields_v1(v: &Value) -> Result<Set, String> {
        let (set, _) = Set::read(v)?;
        Ok(set.unwrap_or_default())
    }

    /// readIterV1: returns the children set (if any) and whether the node is a member.
    pub(crate) fn read(v: &Value) -> Result<(Option<Set>, bool), String> {
        let Value::Object(m) = v else {
            return Err("fieldsV1 must be an object".into());
        };
        let mut children: Option<Set> = None;
        let mut is_member = false;
        for (k, sub) in m {
            if k == "." {
                is_member = true;
                continue;
            }
            let Some(pe) = PE::deserialize(k)? else {
                continue;
            };
            let (grand, child_member) = Set::read(sub)?;
            if child_member {
                children
                    .get_or_insert_with(Set::default)
                    .members
                    .insert(pe.clone());
            }
            if let Some(g) = grand {
                children
                    .get_or_insert_with(Set::default)
                    .children
                    .insert(pe, g);
            }
        }
        if children.is_none() {
            is_member = true;
        }
        Ok((children, is_member))
    }
}
