//! Field selector string syntax, as `k8s.io/apimachinery/pkg/fields.ParseSelector` accepts it.
//!
//! Comma-separated terms `field=value`, `field==value` or `field!=value`; empty terms are
//! skipped. In values, `\,` `\=` and `\\` stand for a literal `,` `=` and `\`; any other escape,
//! a trailing `\`, or an unescaped `,`/`=` in a value is refused with the real messages
//! (`invalid field selector: invalid escape sequence: \x`,
//! `invalid field selector: unescaped character in value: 61` — Go prints the rune's number).
//! A term without an operator gives `invalid selector: '<selector>'; can't understand '<term>'`.
//! The field name is taken verbatim (no trimming); whether a field is supported is the
//! server's decision (`field label not supported: <field>`). As in the real one, a missing
//! field reads as the empty string when matching.

use std::fmt;

pub use crate::SelectorError;

/// A parsed field selector: all requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// One `field op value` term (value already unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

/// Field selector operators (`=` and `==` are both `Eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    Eq,
    NotEq,
}

impl std::str::FromStr for FieldSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = split_terms(s);
        parts.sort();
        let mut requirements = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, raw)) = split_term(part) else {
                return Err(SelectorError::new(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let value = unescape_value(raw).map_err(SelectorError::new)?;
            requirements.push(FieldRequirement {
                field: field.to_string(),
                op,
                value,
            });
        }
        Ok(FieldSelector { requirements })
    }
}

impl FieldSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        FieldSelector {
            requirements: Vec::new(),
        }
    }

    /// Whether this selector places no restriction.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The fields this selector mentions, for the server's "field label not supported" check.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// `get(field)` returns the object's value for a supported field (`None` reads as `""`).
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = get(&r.field).unwrap_or_default();
            match r.op {
                FieldOp::Eq => v == r.value,
                FieldOp::NotEq => v != r.value,
            }
        })
    }

    /// The value the selector demands for `field` with `=`/`==`, if any.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Eq)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string form, values escaped (`a=b,c!=d\,e`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if r.op == FieldOp::Eq { "=" } else { "!=" };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

/// Escapes a literal for use as a field selector value (`\` → `\\`, `,` → `\,`, `=` → `\=`).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Splits on commas that are not escaped by a backslash (escapes are kept).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator (`!=` before `==` before `=`).
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOp::NotEq),
            ("==", FieldOp::Eq),
            ("=", FieldOp::Eq),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, value));
            }
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    ));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(format!(
                    "invalid field selector: unescaped character in value: {}",
                    c as u32
                ));
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sel(s: &str) -> FieldSelector {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<FieldSelector>() {
            Ok(v) => panic!("{s:?} should fail, parsed as {v}"),
            Err(e) => e.to_string(),
        }
    }

    fn getter<'a>(m: &'a HashMap<&str, &str>) -> impl Fn(&str) -> Option<String> + 'a {
        move |f| m.get(f).map(|v| v.to_string())
    }

    #[test]
    fn operators() {
        let obj = HashMap::from([("metadata.name", "a"), ("spec.deviceRef.name", "tor1-01")]);
        assert!(sel("metadata.name=a").matches(getter(&obj)));
        assert!(sel("metadata.name==a").matches(getter(&obj)));
        assert!(!sel("metadata.name!=a").matches(getter(&obj)));
        assert!(sel("metadata.name!=b").matches(getter(&obj)));
        assert!(sel("spec.deviceRef.name=tor1-01,metadata.name=a").matches(getter(&obj)));
        assert!(!sel("spec.deviceRef.name=tor1-01,metadata.name=b").matches(getter(&obj)));
        // a field without a value reads as ""
        assert!(sel("status.phase=").matches(getter(&obj)));
        assert!(sel("status.phase!=x").matches(getter(&obj)));
        assert_eq!(sel("a==b").requirements[0].value, "b");
        assert_eq!(sel("a==b").requirements[0].op, FieldOp::Eq);
    }

    #[test]
    fn empty_and_sorting() {
        assert!(sel("").is_empty());
        assert!(sel(",,").is_empty());
        assert!(FieldSelector::everything().matches(|_| None));
        let s = sel("z=1,a!=2,,m==3");
        let fields: Vec<&str> = s.fields().collect();
        assert_eq!(fields, vec!["a", "m", "z"]);
        assert_eq!(s.to_string(), "a!=2,m=3,z=1");
        assert_eq!(s.requires_exact_match("z"), Some("1"));
        assert_eq!(s.requires_exact_match("a"), None);
    }

    #[test]
    fn escaping() {
        let s = sel(r"metadata.name=a\,b\=c\\d");
        assert_eq!(s.requirements[0].value, r"a,b=c\d");
        assert_eq!(s.requirements.len(), 1);
        assert_eq!(s.to_string(), r"metadata.name=a\,b\=c\\d");
        assert_eq!(escape_value(r"x,y=z\"), r"x\,y\=z\\");
        let round: FieldSelector = format!("f={}", escape_value("a,=b")).parse().unwrap();
        assert_eq!(round.requirements[0].value, "a,=b");
    }

    #[test]
    fn errors_use_real_messages() {
        assert_eq!(
            err("metadata.name"),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            err("a=b,c"),
            "invalid selector: 'a=b,c'; can't understand 'c'"
        );
        assert_eq!(
            err(r"a=b\x"),
            r"invalid field selector: invalid escape sequence: \x"
        );
        assert_eq!(
            err(r"a=b\"),
            r"invalid field selector: invalid escape sequence: \"
        );
        assert_eq!(
            err("a=b=c"),
            "invalid field selector: unescaped character in value: 61"
        );
        assert_eq!(
            err("a==="),
            "invalid field selector: unescaped character in value: 61"
        );
    }

    #[test]
    fn first_operator_wins() {
        let s = sel("a!=b");
        assert_eq!(
            (s.requirements[0].field.as_str(), s.requirements[0].op),
            ("a", FieldOp::NotEq)
        );
        // the field part is not trimmed and may contain anything but an operator
        assert_eq!(sel("a b =c").requirements[0].field, "a b ");
        // `x!` then `=`: "!=" is found at index 1
        assert_eq!(sel("x!=").requirements[0].value, "");
    }
}
