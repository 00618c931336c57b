//! Label selector string syntax, as `k8s.io/apimachinery/pkg/labels.Parse` accepts it.
//!
//! Grammar: comma-separated requirements, each one of `key`, `!key`, `key=value`,
//! `key==value`, `key!=value`, `key in (v1,v2)`, `key notin (v1,v2)`, `key>N`, `key<N`
//! (whitespace allowed between tokens). Keys must be valid label keys (optional DNS-subdomain
//! prefix and `/`, name of at most 63 alphanumeric/`-_.` characters) and values valid label
//! values; otherwise parsing fails with the real parser's message, e.g.
//! `unable to parse requirement: <nil>: Invalid value: "-a": name part must consist of ...`
//! or `found 'b', expected: ',' or 'end of string'`. The API server answers such a selector
//! with 400 BadRequest.
//!
//! Matching follows the real one: `=`/`==`/`in` need the key present with one of the values,
//! `!=`/`notin` match when the key is absent, `>`/`<` compare integers and fail on absent or
//! non-integer label values.

use std::collections::BTreeSet;
use std::fmt;

pub use crate::SelectorError;
use apollo_names::messages::{go_quote, label_key_errors, label_value_errors};

/// A selector operator (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>N`
    GreaterThan,
    /// `key<N`
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values, sorted and without duplicates (empty for `Exists`/`DoesNotExist`).
    pub values: Vec<String>,
}

impl Requirement {
    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &serde_json::Map<String, serde_json::Value>) -> bool {
        let value = labels.get(&self.key).and_then(|v| v.as_str());
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.has_value(v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// The canonical form the real `Requirement.String()` produces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: all requirements must hold (an empty one matches everything).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut requirements = Parser::new(s).parse().map_err(SelectorError::new)?;
        // The real parser sorts by key (stable) for a deterministic form.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        LabelSelector {
            requirements: Vec::new(),
        }
    }

    /// Whether `labels` (an object's `metadata.labels`) satisfy this selector.
    pub fn matches(&self, labels: &serde_json::Map<String, serde_json::Value>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Like [`LabelSelector::matches`], taking a whole object (missing labels = no labels).
    pub fn matches_object(&self, obj: &serde_json::Value) -> bool {
        static EMPTY: std::sync::OnceLock<serde_json::Map<String, serde_json::Value>> =
            std::sync::OnceLock::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(|l| l.as_object())
            .unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new));
        self.matches(labels)
    }

    /// Whether this selector places no restriction.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The value a selector demands for `label` (`=`, `==` or a one-value `in`), if any.
    pub fn requires_exact_match(&self, label: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == label)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form (`Selector.String()`), e.g. `a=b,c in (x,y),!d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_whitespace(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(c: u8) -> bool {
    matches!(c, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits the input into tokens the way the real lexer does (byte-wise; NUL ends the input).
fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let b = &b[..end];
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < b.len() && is_whitespace(b[pos]) {
            pos += 1;
        }
        if pos >= b.len() {
            out.push((Tok::EndOfString, String::new()));
            return out;
        }
        if is_special(b[pos]) {
            // Longest run of special symbols that still forms a known token.
            let start = pos;
            let mut last: Option<(Tok, usize)> = None;
            while pos < b.len() && is_special(b[pos]) {
                let cand = String::from_utf8_lossy(&b[start..=pos]);
                if let Some(t) = keyword(&cand) {
                    last = Some((t, pos + 1));
                    pos += 1;
                } else {
                    break;
                }
            }
            // Every single special symbol is a token, so `last` is always set.
            let (tok, stop) = last.unwrap_or((Tok::Identifier, start + 1));
            pos = stop;
            out.push((tok, String::from_utf8_lossy(&b[start..stop]).into_owned()));
        } else {
            let start = pos;
            while pos < b.len() && !is_special(b[pos]) && !is_whitespace(b[pos]) {
                pos += 1;
            }
            let lit = String::from_utf8_lossy(&b[start..pos]).into_owned();
            let tok = keyword(&lit).unwrap_or(Tok::Identifier);
            out.push((tok, lit));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    fn new(s: &str) -> Self {
        Parser {
            items: lex(s),
            pos: 0,
        }
    }

    fn item(&self, i: usize, ctx: Ctx) -> (Tok, String) {
        let (tok, lit) = self
            .items
            .get(i)
            .cloned()
            .unwrap_or((Tok::EndOfString, String::new()));
        let tok = match (ctx, tok) {
            (Ctx::Values, Tok::In | Tok::NotIn) => Tok::Identifier,
            (_, t) => t,
        };
        (tok, lit)
    }

    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        self.item(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let it = self.item(self.pos, ctx);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        it
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = Vec::new();
        loop {
            let (tok, lit) = self.lookahead(Ctx::Values);
            match tok {
                Tok::Identifier | Tok::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Ctx::Values);
                    match t {
                        Tok::EndOfString => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, l2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Tok::EndOfString => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = op {
            return new_requirement(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values.into_iter().collect())
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Tok::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Tok::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        let errs = label_key_errors(&lit);
        if !errs.is_empty() {
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                go_quote(&lit),
                errs.join("; ")
            ));
        }
        let (t, _) = self.lookahead(Ctx::Values);
        if matches!(t, Tok::EndOfString | Tok::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Operator::In,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn parse_values(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Tok::Identifier | Tok::Comma => {
                let set = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Ctx::Values);
                if tok != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>, String> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Tok::Identifier => {
                    set.insert(lit);
                    let (t2, l2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(set),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (t2, _) = self.lookahead(Ctx::Values);
                    if t2 == Tok::ClosedPar {
                        set.insert(String::new());
                        return Ok(set);
                    }
                    if t2 == Tok::Comma {
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>, String> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if matches!(tok, Tok::EndOfString | Tok::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Tok::Identifier {
            return Ok(BTreeSet::from([lit]));
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

/// `NewRequirement`'s validation (the key was already checked by the parser).
fn new_requirement(key: String, op: Operator, values: Vec<String>) -> Result<Requirement, String> {
    let mut errs: Vec<String> = Vec::new();
    if matches!(op, Operator::GreaterThan | Operator::LessThan) {
        if values.len() != 1 {
            errs.push(format!(
                "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                go_string_slice(&values)
            ));
        }
        for (i, v) in values.iter().enumerate() {
            if v.parse::<i64>().is_err() {
                errs.push(format!(
                    "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                    go_quote(v)
                ));
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let v_errs = label_value_errors(v);
        if !v_errs.is_empty() {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                go_quote(v),
                v_errs.join("; ")
            ));
        }
    }
    errs.dedup();
    match errs.len() {
        0 => Ok(Requirement {
            key,
            operator: op,
            values,
        }),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

fn go_string_slice(v: &[String]) -> String {
    let inner: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> LabelSelector {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> String {
        match s.parse::<LabelSelector>() {
            Ok(v) => panic!("{s:?} should fail, parsed as {v}"),
            Err(e) => e.to_string(),
        }
    }

    fn labels(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn empty_and_everything_match_all() {
        assert!(sel("").matches(&labels(json!({}))));
        assert!(sel("  ").is_empty());
        assert!(LabelSelector::everything().matches(&labels(json!({"a": "b"}))));
    }

    #[test]
    fn equality_operators() {
        let l = labels(json!({"app": "dp", "tier": "edge"}));
        assert!(sel("app=dp").matches(&l));
        assert!(sel("app==dp").matches(&l));
        assert!(sel("app = dp").matches(&l));
        assert!(!sel("app=other").matches(&l));
        assert!(!sel("app!=dp").matches(&l));
        assert!(sel("app!=x").matches(&l));
        // != matches when the key is absent
        assert!(sel("missing!=x").matches(&l));
        assert!(!sel("missing=x").matches(&l));
        assert!(sel("app=dp,tier=edge").matches(&l));
        assert!(!sel("app=dp,tier=core").matches(&l));
        // empty value
        assert!(sel("e=").matches(&labels(json!({"e": ""}))));
        assert!(!sel("e=").matches(&l));
        assert!(sel("e=,app=dp").matches(&labels(json!({"e": "", "app": "dp"}))));
    }

    #[test]
    fn set_operators() {
        let l = labels(json!({"env": "prod"}));
        assert!(sel("env in (prod,staging)").matches(&l));
        assert!(sel("env in (prod)").matches(&l));
        assert!(!sel("env in (dev)").matches(&l));
        assert!(!sel("env notin (prod)").matches(&l));
        assert!(sel("env notin (dev,qa)").matches(&l));
        assert!(sel("other notin (x)").matches(&l));
        assert!(!sel("other in (x)").matches(&l));
        assert!(sel("env in(prod)").matches(&l));
        // keywords are valid values and keys in value position
        assert!(sel("x in (in,notin)").matches(&labels(json!({"x": "in"}))));
        assert!(sel("in=notin").matches(&labels(json!({"in": "notin"}))));
    }

    #[test]
    fn empty_values_in_sets() {
        let s = sel("x in (foo,,baz),y,z notin ()");
        assert_eq!(s.requirements()[0].values, vec!["", "baz", "foo"]);
        assert_eq!(s.requirements()[2].values, vec![""]);
        assert_eq!(s.to_string(), "x in (,baz,foo),y,z notin ()");
        assert_eq!(sel("x in (,a)").requirements()[0].values, vec!["", "a"]);
        assert_eq!(sel("x in (a,)").requirements()[0].values, vec!["", "a"]);
    }

    #[test]
    fn existence() {
        let l = labels(json!({"a": "1"}));
        assert!(sel("a").matches(&l));
        assert!(!sel("!a").matches(&l));
        assert!(sel("!b").matches(&l));
        assert!(!sel("b").matches(&l));
        assert!(sel("a,!b").matches(&l));
        assert!(sel(" ! b ").matches(&l));
    }

    #[test]
    fn numeric_comparisons() {
        let l = labels(json!({"n": "5", "s": "x"}));
        assert!(sel("n>4").matches(&l));
        assert!(!sel("n>5").matches(&l));
        assert!(sel("n<6").matches(&l));
        assert!(sel("n < 6").matches(&l));
        assert!(!sel("s>1").matches(&l));
        assert!(!sel("absent<10").matches(&l));
        // a negative number is not a valid label value, so the real parser refuses it
        assert!(err("n>-1").contains("values[0][n]: Invalid value: \"-1\""));
        assert_eq!(
            err("n>x"),
            "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
    }

    #[test]
    fn canonical_string_is_sorted_by_key() {
        assert_eq!(
            sel("z=1,a in (y,x),!m,k").to_string(),
            "a in (x,y),k,!m,z=1"
        );
        assert_eq!(sel("a==b,c!=d").to_string(), "a==b,c!=d");
    }

    #[test]
    fn exact_match_introspection() {
        let s = sel("a=b,c in (d),e in (f,g)");
        assert_eq!(s.requires_exact_match("a"), Some("b"));
        assert_eq!(s.requires_exact_match("c"), Some("d"));
        assert_eq!(s.requires_exact_match("e"), None);
        assert_eq!(s.requires_exact_match("zz"), None);
    }

    #[test]
    fn syntax_errors_use_real_messages() {
        assert_eq!(
            err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
        assert_eq!(err("a=b,"), "found '', expected: identifier after ','");
        assert_eq!(err("a=b,,c"), "found ',', expected: identifier after ','");
        assert_eq!(
            err(",a"),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            err("a in b"),
            "unable to parse requirement: found 'b' expected: '('"
        );
        assert_eq!(
            err("a in (b c)"),
            "unable to parse requirement: found 'c', expected: ',' or ')'"
        );
        assert_eq!(
            err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            err("a in ("),
            "unable to parse requirement: found '', expected: ',', ')' or identifier"
        );
        assert_eq!(
            err("a=(b)"),
            "unable to parse requirement: found '(', expected: identifier"
        );
        assert_eq!(
            err("!"),
            "unable to parse requirement: found '', expected: identifier"
        );
        assert_eq!(err("!a=b"), "found '=', expected: ',' or 'end of string'");
        assert_eq!(
            err("a in (b,=)"),
            "unable to parse requirement: found '=', expected: ',', or identifier"
        );
        assert_eq!(
            err("a<=5"),
            "unable to parse requirement: found '=', expected: identifier"
        );
    }

    #[test]
    fn invalid_keys_and_values_are_refused() {
        assert_eq!(
            err("-bad=x"),
            "unable to parse requirement: <nil>: Invalid value: \"-bad\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
        assert_eq!(
            err("a=-x"),
            "unable to parse requirement: values[0][a]: Invalid value: \"-x\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        );
        let long = "v".repeat(64);
        assert!(err(&format!("a={long}")).contains("must be no more than 63 bytes"));
        assert!(err("Bad.Prefix/x").contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(err("a/b/c").contains("a valid label key must consist"));
        // several bad values are aggregated like Go's utilerrors.Aggregate
        let e = err("a in (-x,-y)");
        assert!(
            e.starts_with("unable to parse requirement: [values[0][a]: Invalid value: \"-x\""),
            "{e}"
        );
        assert!(e.contains(", values[1][a]: Invalid value: \"-y\""), "{e}");
        // prefixed keys are fine
        assert!(
            sel("app.kubernetes.io/name=apollo")
                .matches(&labels(json!({"app.kubernetes.io/name": "apollo"})))
        );
    }

    #[test]
    fn whitespace_variants() {
        let l = labels(json!({"a": "x", "b": "y"}));
        for s in [
            "a in(x)",
            "a  in  ( x , z )",
            "a\tin\t(x)",
            "a\nin (x)",
            " a=x , b=y ",
            "b notin(z)",
            "!c,a",
            "a ,!c",
        ] {
            assert!(sel(s).matches(&l), "{s:?}");
        }
        assert_eq!(sel("a notin(z)").to_string(), "a notin (z)");
        // a NUL byte ends the input, as in the real lexer
        assert_eq!(sel("a=x\0garbage").to_string(), "a=x");
    }

    #[test]
    fn non_string_label_values_count_as_absent() {
        let l = labels(json!({"n": 5}));
        assert!(!sel("n").matches(&l));
        assert!(sel("n!=5").matches(&l));
    }

    #[test]
    fn matches_object_reads_metadata_labels() {
        let s = sel("app=dp");
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "dp"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
        assert!(sel("!app").matches_object(&json!({})));
    }

    #[test]
    fn quoting() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
