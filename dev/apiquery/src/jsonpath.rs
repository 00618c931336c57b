//! The Kubernetes JSONPath subset (`k8s.io/client-go/util/jsonpath`) used by CRD
//! `additionalPrinterColumns` and `selectableFields`, evaluated with missing keys allowed
//! (as the apiserver's table convertor does).
//!
//! Supported: an optional `{...}` wrapper (several `{}` groups are evaluated in turn; text
//! outside them yields itself as a string), an optional leading `$`, `.field`, `['field']` /
//! `["field"]` (for keys with dots or slashes), `.*` (all values of an object), `[n]` and
//! negative `[-n]` indices, `[start:end:step]` slices, `[*]` (all elements of an array),
//! unions `[0,2]` / `['a','b']`, `..` recursive descent (`..name`), and filters
//! `[?(@.type=="Ready")]` with `==`, `!=`, `<`, `>`, `<=`, `>=` against string, number or
//! boolean literals or other `@` paths, and existence filters `[?(@.field)]`.
//!
//! Semantics: a missing key, an index out of range or a step into a value of the wrong type
//! yields no values (never an error). Where the real evaluator would fail at run time (`[*]`
//! or a filter applied to a non-array, comparing values of different types) this one yields no
//! values too, which is what a printer column shows in both cases (an empty cell). Only a
//! malformed expression is an error.
//!
//! Not supported: `range`/`end`, functions, regular expressions (`=~`), and `..` order
//! matching Go (Go visits object keys in random order; here it is document order).

use serde_json::Value;

/// An expression that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonPathError {
    pub message: String,
}

fn perr<T>(msg: impl Into<String>) -> Result<T, JsonPathError> {
    Err(JsonPathError {
        message: msg.into(),
    })
}

/// Evaluates `expr` against `obj`; missing paths yield no values.
pub fn evaluate(expr: &str, obj: &Value) -> Result<Vec<Value>, JsonPathError> {
    let template = parse(expr)?;
    Ok(template.evaluate(obj))
}

/// Checks that `expr` parses, without evaluating it.
pub fn validate(expr: &str) -> Result<(), JsonPathError> {
    parse(expr).map(|_| ())
}

/// A parsed JSONPath template, for evaluating one expression against many objects.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Seg>),
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    Wildcard,
    Recursive,
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
    All,
    Union(Vec<Seg>),
    Filter(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    left: Operand,
    cmp: Option<(Cmp, Operand)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Path(Vec<Seg>),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

/// Parses a JSONPath template.
pub fn parse(expr: &str) -> Result<JsonPath, JsonPathError> {
    let trimmed = expr.trim();
    if !trimmed.contains('{') {
        // A bare path, as written in `selectableFields` or `jsonPath:` fields.
        return Ok(JsonPath {
            nodes: vec![Node::Path(parse_path(trimmed)?)],
        });
    }
    let mut nodes = Vec::new();
    let mut rest = expr;
    while !rest.is_empty() {
        match rest.find('{') {
            None => {
                nodes.push(Node::Text(rest.to_string()));
                break;
            }
            Some(open) => {
                if open > 0 {
                    nodes.push(Node::Text(rest[..open].to_string()));
                }
                let after = &rest[open + 1..];
                let close = find_close_brace(after).ok_or_else(|| JsonPathError {
                    message: "unclosed action".to_string(),
                })?;
                nodes.push(Node::Path(parse_path(after[..close].trim())?));
                rest = &after[close + 1..];
            }
        }
    }
    Ok(JsonPath { nodes })
}

fn find_close_brace(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '}' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Index of the `]` closing the `[` whose content starts at `s`, honouring quotes and nesting.
fn find_close_bracket(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '[' | '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ']' if depth == 0 => return Some(i),
            ']' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn is_field_char(c: char) -> bool {
    !matches!(
        c,
        '.' | '[' | ']' | '(' | ')' | ' ' | '\t' | '\n' | '=' | '!' | '<' | '>' | ',' | '{' | '}'
    )
}

fn parse_path(s: &str) -> Result<Vec<Seg>, JsonPathError> {
    let mut segs = Vec::new();
    let s = s.strip_prefix('$').unwrap_or(s);
    let b: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    // A leading bare name (`metadata.name`) is read as `.metadata.name`.
    if let Some(&(_, c)) = b.first()
        && c != '.'
        && c != '['
        && c != '@'
    {
        while i < b.len() && is_field_char(b[i].1) {
            i += 1;
        }
        if i == 0 {
            return perr(format!("unrecognized character in action: {c:?}"));
        }
        let end = b.get(i).map_or(s.len(), |x| x.0);
        segs.push(Seg::Field(s[..end].to_string()));
    }
    while i < b.len() {
        let (pos, c) = b[i];
        match c {
            '.' => {
                if b.get(i + 1).map(|x| x.1) == Some('.') {
                    segs.push(Seg::Recursive);
                    i += 2;
                    // `..name` continues with a field; `..[0]` / `..*` with the next segment
                    if let Some(&(_, n)) = b.get(i)
                        && n != '['
                        && n != '.'
                    {
                        let (seg, next) = read_field(s, &b, i)?;
                        segs.push(seg);
                        i = next;
                    }
                    continue;
                }
                i += 1;
                if i >= b.len() {
                    break; // `{.}`: the object itself
                }
                if b[i].1 == '[' || b[i].1 == '.' {
                    continue;
                }
                let (seg, next) = read_field(s, &b, i)?;
                segs.push(seg);
                i = next;
            }
            '[' => {
                let inner_start = pos + 1;
                let close = find_close_bracket(&s[inner_start..]).ok_or_else(|| JsonPathError {
                    message: "unterminated array".to_string(),
                })?;
                let inner = &s[inner_start..inner_start + close];
                segs.push(parse_bracket(inner)?);
                let end = inner_start + close + 1;
                while i < b.len() && b[i].0 < end {
                    i += 1;
                }
            }
            c if c.is_whitespace() => i += 1,
            c => return perr(format!("unrecognized character in action: {c:?}")),
        }
    }
    Ok(segs)
}

fn read_field(s: &str, b: &[(usize, char)], mut i: usize) -> Result<(Seg, usize), JsonPathError> {
    let start = b[i].0;
    if b[i].1 == '*' {
        return Ok((Seg::Wildcard, i + 1));
    }
    while i < b.len() && is_field_char(b[i].1) {
        i += 1;
    }
    let end = b.get(i).map_or(s.len(), |x| x.0);
    if end == start {
        return perr(format!("unrecognized character in action: {:?}", b[i].1));
    }
    Ok((Seg::Field(s[start..end].to_string()), i))
}

fn parse_bracket(inner: &str) -> Result<Seg, JsonPathError> {
    let t = inner.trim();
    if let Some(f) = t.strip_prefix('?') {
        let f = f.trim();
        let Some(body) = f.strip_prefix('(').and_then(|x| x.strip_suffix(')')) else {
            return perr(format!("unterminated filter: {inner}"));
        };
        return Ok(Seg::Filter(Box::new(parse_filter(body.trim())?)));
    }
    if t == "*" {
        return Ok(Seg::All);
    }
    let parts = split_top_level(t, ',');
    if parts.len() > 1 {
        let segs = parts
            .iter()
            .map(|p| parse_bracket_item(p.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Seg::Union(segs));
    }
    parse_bracket_item(t)
}

fn parse_bracket_item(t: &str) -> Result<Seg, JsonPathError> {
    if let Some(lit) = parse_quoted(t)? {
        return Ok(Seg::Field(lit));
    }
    if t == "*" {
        return Ok(Seg::All);
    }
    if t.contains(':') {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.len() > 3 {
            return perr(format!("invalid array index {t}"));
        }
        let num = |s: &str| -> Result<Option<i64>, JsonPathError> {
            let s = s.trim();
            if s.is_empty() {
                Ok(None)
            } else {
                s.parse::<i64>().map(Some).map_err(|_| JsonPathError {
                    message: format!("invalid array index {t}"),
                })
            }
        };
        let start = num(parts[0])?;
        let end = num(parts.get(1).copied().unwrap_or(""))?;
        let step = num(parts.get(2).copied().unwrap_or(""))?;
        return Ok(Seg::Slice(start, end, step));
    }
    match t.parse::<i64>() {
        Ok(n) => Ok(Seg::Index(n)),
        Err(_) if !t.is_empty() && t.chars().all(is_field_char) => Ok(Seg::Field(t.to_string())),
        Err(_) => perr(format!("invalid array index {t}")),
    }
}

/// A quoted string literal (`'x'` or `"x"`, backslash escapes), or None when not quoted.
fn parse_quoted(t: &str) -> Result<Option<String>, JsonPathError> {
    let Some(q) = t.chars().next().filter(|c| *c == '\'' || *c == '"') else {
        return Ok(None);
    };
    if t.len() < 2 || !t.ends_with(q) {
        return perr(format!("unterminated string: {t}"));
    }
    let body = &t[1..t.len() - 1];
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => return perr(format!("unterminated string: {t}")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(Some(out))
}

fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_filter(body: &str) -> Result<Filter, JsonPathError> {
    // Find a comparison operator outside quotes and brackets.
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let chars: Vec<(usize, char)> = body.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (i, c) = chars[k];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            k += 1;
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            '=' | '!' | '<' | '>' if depth == 0 => {
                let two = body.get(i..i + 2).unwrap_or("");
                let (cmp, len) = match two {
                    "==" => (Cmp::Eq, 2),
                    "!=" => (Cmp::Ne, 2),
                    "<=" => (Cmp::Le, 2),
                    ">=" => (Cmp::Ge, 2),
                    _ => match c {
                        '<' => (Cmp::Lt, 1),
                        '>' => (Cmp::Gt, 1),
                        _ => return perr(format!("unrecognized filter operator in {body}")),
                    },
                };
                let left = parse_operand(body[..i].trim())?;
                let right = parse_operand(body[i + len..].trim())?;
                return Ok(Filter {
                    left,
                    cmp: Some((cmp, right)),
                });
            }
            _ => {}
        }
        k += 1;
    }
    Ok(Filter {
        left: parse_operand(body.trim())?,
        cmp: None,
    })
}

fn parse_operand(t: &str) -> Result<Operand, JsonPathError> {
    if t.is_empty() {
        return perr("empty filter operand");
    }
    if let Some(rest) = t.strip_prefix('@') {
        return Ok(Operand::Path(parse_path(rest)?));
    }
    if let Some(s) = parse_quoted(t)? {
        return Ok(Operand::Literal(Value::String(s)));
    }
    match t {
        "true" => return Ok(Operand::Literal(Value::Bool(true))),
        "false" => return Ok(Operand::Literal(Value::Bool(false))),
        _ => {}
    }
    if let Ok(i) = t.parse::<i64>() {
        return Ok(Operand::Literal(Value::from(i)));
    }
    if let Some(n) = t.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        return Ok(Operand::Literal(Value::Number(n)));
    }
    perr(format!("unrecognized filter operand {t}"))
}

/// The evaluator's failure where the real one would return an error; callers show no values.
struct RuntimeError;

impl JsonPath {
    /// All values the template yields, in order (missing paths yield nothing).
    pub fn evaluate(&self, obj: &Value) -> Vec<Value> {
        let mut out = Vec::new();
        for node in &self.nodes {
            match node {
                Node::Text(t) => out.push(Value::String(t.clone())),
                Node::Path(segs) => match eval_segs(segs, vec![obj]) {
                    Ok(vals) => out.extend(vals.into_iter().cloned()),
                    Err(RuntimeError) => return Vec::new(),
                },
            }
        }
        out
    }
}

fn eval_segs<'a>(segs: &[Seg], mut cur: Vec<&'a Value>) -> Result<Vec<&'a Value>, RuntimeError> {
    for seg in segs {
        cur = eval_seg(seg, cur)?;
        if cur.is_empty() {
            break;
        }
    }
    Ok(cur)
}

fn resolve_index(i: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let i = if i < 0 { i + len } else { i };
    if (0..len).contains(&i) {
        usize::try_from(i).ok()
    } else {
        None
    }
}

fn eval_seg<'a>(seg: &Seg, input: Vec<&'a Value>) -> Result<Vec<&'a Value>, RuntimeError> {
    let mut out = Vec::new();
    match seg {
        Seg::Field(name) => {
            for v in input {
                if let Some(x) = v.as_object().and_then(|m| m.get(name)) {
                    out.push(x);
                }
            }
        }
        Seg::Wildcard => {
            for v in input {
                if let Some(m) = v.as_object() {
                    out.extend(m.values());
                }
            }
        }
        Seg::Recursive => {
            fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
                out.push(v);
                match v {
                    Value::Object(m) => m.values().for_each(|x| walk(x, out)),
                    Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
                    _ => {}
                }
            }
            for v in input {
                walk(v, &mut out);
            }
        }
        Seg::Index(i) => {
            for v in input {
                let Some(a) = v.as_array() else {
                    return Err(RuntimeError);
                };
                if let Some(x) = resolve_index(*i, a.len()).and_then(|k| a.get(k)) {
                    out.push(x);
                }
            }
        }
        Seg::Slice(start, end, step) => {
            for v in input {
                let Some(a) = v.as_array() else {
                    return Err(RuntimeError);
                };
                let len = i64::try_from(a.len()).unwrap_or(i64::MAX);
                let norm = |x: i64| if x < 0 { (x + len).max(0) } else { x.min(len) };
                let s = norm(start.unwrap_or(0));
                let e = norm(end.unwrap_or(len));
                let st = step.unwrap_or(1);
                if st <= 0 {
                    return Err(RuntimeError);
                }
                let mut k = s;
                while k < e {
                    if let Some(x) = usize::try_from(k).ok().and_then(|k| a.get(k)) {
                        out.push(x);
                    }
                    k += st;
                }
            }
        }
        Seg::All => {
            for v in input {
                let Some(a) = v.as_array() else {
                    return Err(RuntimeError);
                };
                out.extend(a.iter());
            }
        }
        Seg::Union(segs) => {
            for s in segs {
                out.extend(eval_seg(s, input.clone())?);
            }
        }
        Seg::Filter(f) => {
            for v in input {
                let Some(a) = v.as_array() else {
                    return Err(RuntimeError);
                };
                for item in a {
                    if filter_passes(f, item)? {
                        out.push(item);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn operand_values<'a>(op: &'a Operand, item: &'a Value) -> Result<Vec<&'a Value>, RuntimeError> {
    match op {
        Operand::Path(segs) => eval_segs(segs, vec![item]),
        Operand::Literal(v) => Ok(vec![v]),
    }
}

fn filter_passes(f: &Filter, item: &Value) -> Result<bool, RuntimeError> {
    let lefts = operand_values(&f.left, item);
    let Some((cmp, right)) = &f.cmp else {
        return Ok(lefts.is_ok_and(|l| !l.is_empty()));
    };
    let lefts = lefts?;
    let left = match lefts.as_slice() {
        [] => return Ok(false),
        [one] => *one,
        _ => return Err(RuntimeError),
    };
    let rights = operand_values(right, item)?;
    let right = match rights.as_slice() {
        [] => return Ok(false),
        [one] => *one,
        _ => return Err(RuntimeError),
    };
    compare(*cmp, left, right)
}

fn compare(cmp: Cmp, l: &Value, r: &Value) -> Result<bool, RuntimeError> {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (l, r) {
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a
                .as_f64()
                .zip(b.as_f64())
                .and_then(|(x, y)| x.partial_cmp(&y)),
        },
        (Value::Bool(a), Value::Bool(b)) => {
            return match cmp {
                Cmp::Eq => Ok(a == b),
                Cmp::Ne => Ok(a != b),
                _ => Err(RuntimeError),
            };
        }
        _ => None,
    };
    let Some(ord) = ord else {
        return Err(RuntimeError);
    };
    Ok(match cmp {
        Cmp::Eq => ord == Ordering::Equal,
        Cmp::Ne => ord != Ordering::Equal,
        Cmp::Lt => ord == Ordering::Less,
        Cmp::Gt => ord == Ordering::Greater,
        Cmp::Le => ord != Ordering::Greater,
        Cmp::Ge => ord != Ordering::Less,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj() -> Value {
        json!({
            "metadata": {
                "name": "dp-a",
                "labels": {"app.kubernetes.io/name": "apollo", "tier": "edge"},
                "creationTimestamp": "2026-01-01T00:00:00Z"
            },
            "spec": {
                "deviceRef": {"name": "tor1-01"},
                "ports": [1, 2, 3, 4],
                "nullable": null
            },
            "status": {
                "phase": "Running",
                "replicas": 3,
                "conditions": [
                    {"type": "Ready", "status": "True", "n": 5},
                    {"type": "Degraded", "status": "False", "n": 1},
                    {"status": "Unknown"}
                ]
            }
        })
    }

    fn ev(expr: &str) -> Vec<Value> {
        evaluate(expr, &obj()).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    #[test]
    fn fields_and_braces() {
        assert_eq!(ev(".metadata.name"), vec![json!("dp-a")]);
        assert_eq!(ev("{.metadata.name}"), vec![json!("dp-a")]);
        assert_eq!(ev("$.metadata.name"), vec![json!("dp-a")]);
        assert_eq!(ev("{$.spec.deviceRef.name}"), vec![json!("tor1-01")]);
        assert_eq!(ev("metadata.name"), vec![json!("dp-a")]);
        assert_eq!(ev(".status.replicas"), vec![json!(3)]);
        assert_eq!(ev(".spec.nullable"), vec![Value::Null]);
        assert_eq!(ev("{.}"), vec![obj()]);
    }

    #[test]
    fn missing_paths_yield_nothing() {
        assert!(ev(".spec.nope").is_empty());
        assert!(ev(".spec.nope.deeper[0]").is_empty());
        assert!(ev(".metadata.name.sub").is_empty());
        assert!(ev(".spec.ports[10]").is_empty());
        assert!(ev(".spec.ports[-10]").is_empty());
        assert!(ev(".status.conditions[?(@.type==\"Nope\")].status").is_empty());
    }

    #[test]
    fn quoted_keys() {
        assert_eq!(
            ev(".metadata.labels['app.kubernetes.io/name']"),
            vec![json!("apollo")]
        );
        assert_eq!(
            ev(".metadata.labels[\"app.kubernetes.io/name\"]"),
            vec![json!("apollo")]
        );
        assert_eq!(
            ev("{.metadata.labels['tier','app.kubernetes.io/name']}"),
            vec![json!("edge"), json!("apollo")]
        );
    }

    #[test]
    fn indices_slices_and_wildcards() {
        assert_eq!(ev(".spec.ports[0]"), vec![json!(1)]);
        assert_eq!(ev(".spec.ports[-1]"), vec![json!(4)]);
        assert_eq!(ev(".spec.ports[1:3]"), vec![json!(2), json!(3)]);
        assert_eq!(ev(".spec.ports[::2]"), vec![json!(1), json!(3)]);
        assert_eq!(ev(".spec.ports[-2:]"), vec![json!(3), json!(4)]);
        assert_eq!(ev(".spec.ports[0,2]"), vec![json!(1), json!(3)]);
        assert_eq!(
            ev(".spec.ports[*]"),
            vec![json!(1), json!(2), json!(3), json!(4)]
        );
        assert_eq!(
            ev(".status.conditions[*].type"),
            vec![json!("Ready"), json!("Degraded")]
        );
        assert_eq!(
            ev(".metadata.labels.*"),
            vec![json!("apollo"), json!("edge")]
        );
        // `[*]` on an object is a run-time error in the real evaluator: no values
        assert!(ev(".metadata.labels[*]").is_empty());
    }

    #[test]
    fn filters() {
        assert_eq!(
            ev(".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.type=='Ready')].status"),
            vec![json!("True")]
        );
        assert_eq!(
            ev("{.status.conditions[?(@.type == \"Degraded\")].status}"),
            vec![json!("False")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.type!=\"Ready\")].status"),
            vec![json!("False")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.n>2)].type"),
            vec![json!("Ready")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.n<2)].type"),
            vec![json!("Degraded")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.n>=1)].type"),
            vec![json!("Ready"), json!("Degraded")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.n<=1)].type"),
            vec![json!("Degraded")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.type)].status"),
            vec![json!("True"), json!("False")]
        );
        assert_eq!(
            ev(".status.conditions[?(@.status==@.status)].status").len(),
            3
        );
        // comparing a string with a number fails in the real evaluator: no values
        assert!(ev(".status.conditions[?(@.n==\"5\")].type").is_empty());
        // filter on a non-array
        assert!(ev(".status[?(@.phase)]").is_empty());
    }

    #[test]
    fn nested_and_numeric_filters() {
        let v = json!({"items": [
            {"name": "a", "status": {"conditions": [{"type": "Ready", "status": "True"}]}, "w": 1.5},
            {"name": "b", "status": {"conditions": [{"type": "Ready", "status": "False"}]}, "w": 0.5}
        ]});
        assert_eq!(
            evaluate(
                "{.items[?(@.status.conditions[0].status==\"True\")].name}",
                &v
            )
            .unwrap(),
            vec![json!("a")]
        );
        assert_eq!(
            evaluate(".items[?(@.w>1.0)].name", &v).unwrap(),
            vec![json!("a")]
        );
        assert_eq!(
            evaluate(".items[?(@.w<1)].name", &v).unwrap(),
            vec![json!("b")]
        );
        assert_eq!(
            evaluate(".items[?(@.name!='a')].w", &v).unwrap(),
            vec![json!(0.5)]
        );
        assert_eq!(
            evaluate(".items[*].status.conditions[*].status", &v).unwrap(),
            vec![json!("True"), json!("False")]
        );
        // a condition list entry whose key is missing is skipped, not an error
        let w = json!({"c": [{"status": "x"}, {"type": "Ready", "status": "y"}]});
        assert_eq!(
            evaluate(".c[?(@.type==\"Ready\")].status", &w).unwrap(),
            vec![json!("y")]
        );
        // several matches for the left side of a comparison fail in the real evaluator
        let z = json!({"c": [{"t": ["a", "b"]}]});
        assert!(evaluate(".c[?(@.t[*]==\"a\")]", &z).unwrap().is_empty());
        // booleans
        let b = json!({"c": [{"ok": true, "n": 1}, {"ok": false, "n": 2}]});
        assert_eq!(evaluate(".c[?(@.ok==true)].n", &b).unwrap(), vec![json!(1)]);
    }

    #[test]
    fn recursive_descent() {
        let v = json!({"a": {"name": 1, "b": [{"name": 2}]}, "name": 0});
        let got = evaluate("{..name}", &v).unwrap();
        let mut nums: Vec<i64> = got.iter().filter_map(|x| x.as_i64()).collect();
        nums.sort();
        assert_eq!(nums, vec![0, 1, 2]);
    }

    #[test]
    fn text_and_multiple_groups() {
        assert_eq!(
            ev("{.metadata.name}/{.status.phase}"),
            vec![json!("dp-a"), json!("/"), json!("Running")]
        );
    }

    #[test]
    fn parse_errors() {
        assert!(evaluate("{.metadata.name", &obj()).is_err());
        assert!(evaluate(".spec.ports[0", &obj()).is_err());
        assert!(evaluate(".status.conditions[?(@.type==\"Ready)]", &obj()).is_err());
        assert!(evaluate(".spec.ports[a:b]", &obj()).is_err());
        assert!(validate(".status.conditions[?(@.type=~\"x\")]").is_err());
        assert!(validate(".a.b['c'][0][-1][*][1:2]").is_ok());
    }
}
