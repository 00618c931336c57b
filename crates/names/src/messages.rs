//! The name and label rules of the crate root, returning the messages apimachinery's
//! validators return (`IsDNS1123Label`, `IsDNS1123Subdomain`, `IsQualifiedName`, the v1.36
//! label key and value checks), word for word: the development API server puts them into its
//! 422 and 400 answers, and tests compare them with what a real kube-apiserver says.
//!
//! Each function returns every message that applies, in apimachinery's order, and an empty
//! list for a valid value.
//!
//! Two wordings differ between the validators a v1.36.2 server uses, and the functions keep
//! them apart: a length limit reads `must be no more than N characters` for object names and
//! qualified names but `... bytes` for label selector keys and label values ([`LenUnit`]), and
//! a malformed key with more than one `/` is "a qualified name" in object metadata but "a
//! valid label key" in a label selector.

use crate::{
    DNS1123_LABEL_MAX_LEN, DNS1123_SUBDOMAIN_MAX_LEN, LABEL_VALUE_MAX_LEN, QUALIFIED_NAME_MAX_LEN,
    has_dns1123_label_shape, has_dns1123_subdomain_shape, has_qualified_name_shape,
};

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_ERR: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const QUALIFIED_NAME_EXAMPLES: &[&str] = &["MyName", "my.name", "123-abc"];
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Go's `strconv.Quote` (`%q`): double-quoted, with Go escape sequences, as the apiserver
/// quotes values in its messages (the development API server and its semantics crates use it).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn is_go_printable(c: char) -> bool {
    // Approximation of unicode.IsPrint: control and format characters, unassigned
    // surrogates and private use are not printable; everything else is.
    let u = c as u32;
    if u < 0x20 || (0x7f..0xa0).contains(&u) || u == 0xad {
        return false;
    }
    // Private use: the BMP area and the supplementary planes 15 and 16.
    if (0xe000..=0xf8ff).contains(&u) || u >= 0xf0000 || (0x2028..=0x2029).contains(&u) {
        return false;
    }
    if (0x200b..=0x200f).contains(&u) || (0x202a..=0x202e).contains(&u) || u == 0xfeff {
        return false;
    }
    !matches!(u, 0xfff9..=0xfffb | 0x2060..=0x2064 | 0x2066..=0x206f)
}

/// The unit a length-limit message names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LenUnit {
    /// `must be no more than N characters` (`validation.MaxLenError`).
    Characters,
    /// `must be no more than N bytes` (what a v1.36 server says for label keys and values).
    Bytes,
}

/// `must be no more than {n} characters` or `... bytes`.
pub fn max_len_error(n: usize, unit: LenUnit) -> String {
    let unit = match unit {
        LenUnit::Characters => "characters",
        LenUnit::Bytes => "bytes",
    };
    format!("must be no more than {n} {unit}")
}

/// `validation.RegexError`: `{msg} (e.g. 'x',  or 'y', regex used for validation is '{fmt}')`
/// (the doubled space is Go's).
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    let mut out = format!("{msg} (e.g. ");
    for (i, example) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push('\'');
        out.push_str(example);
        out.push_str("', ");
    }
    out.push_str("regex used for validation is '");
    out.push_str(fmt);
    out.push_str("')");
    out
}

/// The message for a malformed DNS-1123 subdomain, without a length complaint.
pub fn dns1123_subdomain_message() -> String {
    regex_error(
        DNS1123_SUBDOMAIN_ERR,
        DNS1123_SUBDOMAIN_FMT,
        &["example.com"],
    )
}

/// The message for a malformed qualified name's name part (`name part ` is not included).
pub fn qualified_name_message() -> String {
    regex_error(
        QUALIFIED_NAME_ERR,
        QUALIFIED_NAME_FMT,
        QUALIFIED_NAME_EXAMPLES,
    )
}

/// `IsDNS1123Label` (namespace names); lengths in characters.
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LEN {
        errs.push(max_len_error(DNS1123_LABEL_MAX_LEN, LenUnit::Characters));
    }
    if !has_dns1123_label_shape(value) {
        errs.push(regex_error(
            DNS1123_LABEL_ERR,
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// `IsDNS1123Subdomain` (object names, key prefixes), its length limit worded in `unit`.
pub fn dns1123_subdomain_errors(value: &str, unit: LenUnit) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LEN {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX_LEN, unit));
    }
    if !has_dns1123_subdomain_shape(value) {
        errs.push(dns1123_subdomain_message());
    }
    errs
}

/// `IsQualifiedName` as object metadata is checked (label, annotation and finalizer keys):
/// lengths in characters, a key with several `/` is "a qualified name".
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    key_errors(value, "a qualified name", LenUnit::Characters)
}

/// A label selector's key check on a v1.36 server: as [`qualified_name_errors`] but with
/// lengths in bytes, and a key with several `/` is "a valid label key".
pub fn label_key_errors(value: &str) -> Vec<String> {
    key_errors(value, "a valid label key", LenUnit::Bytes)
}

/// `IsValidLabelValue`; the length limit in bytes, as a v1.36 server says.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LEN {
        errs.push(max_len_error(LABEL_VALUE_MAX_LEN, LenUnit::Bytes));
    }
    if !value.is_empty() && !has_qualified_name_shape(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// A qualified name's checks: the prefix (if any), then the name part. `what` names the whole
/// in the message for a key with more than one `/`.
fn key_errors(value: &str, what: &str, unit: LenUnit) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain_errors(prefix, unit)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![format!(
                "{what} {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                qualified_name_message()
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LEN {
        errs.push(format!(
            "name part {}",
            max_len_error(QUALIFIED_NAME_MAX_LEN, unit)
        ));
    }
    if !has_qualified_name_shape(name) {
        errs.push(format!("name part {}", qualified_name_message()));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_quote_is_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(go_quote("héllo"), "\"héllo\"");
        assert_eq!(go_quote("\u{1}\u{7f}"), "\"\\x01\\x7f\"");
        assert_eq!(go_quote("\u{200b}"), "\"\\u200b\"");
        assert_eq!(go_quote("\u{f0000}"), "\"\\U000f0000\"");
    }

    const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

    #[test]
    fn object_names() {
        assert!(dns1123_subdomain_errors("a.b-c", LenUnit::Characters).is_empty());
        assert_eq!(
            dns1123_subdomain_errors("Bad_Name", LenUnit::Characters),
            vec![SUBDOMAIN_MSG]
        );
        assert_eq!(
            dns1123_subdomain_errors(&"a".repeat(254), LenUnit::Characters),
            vec!["must be no more than 253 characters"]
        );
        assert_eq!(
            dns1123_subdomain_errors(&"A".repeat(254), LenUnit::Bytes),
            vec!["must be no more than 253 bytes", SUBDOMAIN_MSG]
        );
        assert_eq!(
            dns1123_subdomain_errors("", LenUnit::Bytes),
            vec![SUBDOMAIN_MSG]
        );
        assert!(dns1123_label_errors("kube-system").is_empty());
        assert_eq!(dns1123_label_errors("a.b"), vec![LABEL_MSG]);
        assert_eq!(
            dns1123_label_errors(&"a".repeat(64)),
            vec!["must be no more than 63 characters"]
        );
    }

    #[test]
    fn label_keys() {
        assert!(label_key_errors("app").is_empty());
        assert!(label_key_errors("app.kubernetes.io/name").is_empty());
        assert!(label_key_errors("a_b.c-D9").is_empty());
        assert_eq!(
            label_key_errors("-a"),
            vec![format!("name part {QUALIFIED_NAME_MSG}")]
        );
        assert_eq!(
            label_key_errors("/a"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            label_key_errors("Example.com/a"),
            vec![format!("prefix part {SUBDOMAIN_MSG}")]
        );
        assert_eq!(
            label_key_errors("a/b/c"),
            vec![format!(
                "a valid label key {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        );
        let long = "a".repeat(64);
        assert_eq!(
            label_key_errors(&long),
            vec!["name part must be no more than 63 bytes"]
        );
        let empty = label_key_errors("");
        assert_eq!(empty.len(), 2);
        assert_eq!(empty[0], "name part must be non-empty");
    }

    #[test]
    fn qualified_names_word_lengths_in_characters() {
        assert!(qualified_name_errors("example.com/x").is_empty());
        assert_eq!(
            qualified_name_errors(&"a".repeat(64)),
            vec!["name part must be no more than 63 characters"]
        );
        assert_eq!(
            qualified_name_errors(&format!("{}/a", "b".repeat(254))),
            vec!["prefix part must be no more than 253 characters"]
        );
        assert_eq!(
            qualified_name_errors("a/b/c"),
            vec![format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            )]
        );
    }

    #[test]
    fn label_values() {
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("v1.2_3-x").is_empty());
        assert_eq!(
            label_value_errors("a b"),
            vec![
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
            ]
        );
        assert_eq!(
            label_value_errors(&"x".repeat(64)),
            vec!["must be no more than 63 bytes"]
        );
    }

    #[test]
    fn messages_agree_with_the_predicates() {
        for s in [
            "", "a", "A", "a.b", "a/b", "-", "a-b", "a_b", "x/y/z", "é", "Ab.c/D", "a..b",
        ] {
            assert_eq!(
                crate::is_dns1123_subdomain(s),
                dns1123_subdomain_errors(s, LenUnit::Bytes).is_empty(),
                "{s}"
            );
            assert_eq!(
                crate::is_dns1123_label(s),
                dns1123_label_errors(s).is_empty(),
                "{s}"
            );
            assert_eq!(
                crate::is_qualified_name(s),
                qualified_name_errors(s).is_empty(),
                "{s}"
            );
            assert_eq!(
                crate::is_label_value(s),
                label_value_errors(s).is_empty(),
                "{s}"
            );
        }
    }
}
