//! # apollo-names
//!
//! The one implementation of Kubernetes name and label syntax in the workspace, with no
//! dependencies so that the device protocol and the agent (which stay free of Kubernetes
//! crates) can use it as well as the controller and the development API server:
//!
//! - predicates ([`is_dns1123_label`], [`is_dns1123_subdomain`], [`is_qualified_name`],
//!   [`is_qualified_name_part`], [`is_label_value`]) for code that only needs a yes or no;
//! - [`messages`]: the same rules returning the messages apimachinery's validators return,
//!   word for word, for the development API server and its selector parser.
//!
//! The rules (apimachinery `pkg/util/validation`):
//!
//! | what | used for | rule |
//! | --- | --- | --- |
//! | DNS-1123 label | namespace names | `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 |
//! | DNS-1123 subdomain | most object names, device names, key prefixes | labels joined by `.`, at most 253 |
//! | qualified name | label, annotation and finalizer keys | optional subdomain prefix and `/`, then `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 |
//! | label value | label values | empty, or the qualified name part's rule, at most 63 |
//!
//! Lengths are in bytes; every accepted character is ASCII, so bytes and characters agree on
//! every valid name.

pub mod messages;

/// Longest DNS-1123 label (namespace names).
pub const DNS1123_LABEL_MAX_LEN: usize = 63;
/// Longest DNS-1123 subdomain (object names).
pub const DNS1123_SUBDOMAIN_MAX_LEN: usize = 253;
/// Longest name part of a qualified name (the part after the optional `prefix/`).
pub const QUALIFIED_NAME_MAX_LEN: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_LEN: usize = 63;

/// Whether `s` is a DNS-1123 label: lowercase letters, digits and `-`, starting and ending
/// with a letter or digit, at most [`DNS1123_LABEL_MAX_LEN`] bytes.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= DNS1123_LABEL_MAX_LEN && has_dns1123_label_shape(s)
}

/// Whether `s` is a DNS-1123 subdomain: DNS-1123 labels (of any length) joined by `.`, at
/// most [`DNS1123_SUBDOMAIN_MAX_LEN`] bytes in all.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX_LEN && has_dns1123_subdomain_shape(s)
}

/// Whether `s` is a valid name part of a qualified name (a label key without its prefix):
/// letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit, 1 to
/// [`QUALIFIED_NAME_MAX_LEN`] bytes.
pub fn is_qualified_name_part(s: &str) -> bool {
    s.len() <= QUALIFIED_NAME_MAX_LEN && has_qualified_name_shape(s)
}

/// Whether `s` is a qualified name (a label, annotation or finalizer key): a name part,
/// optionally preceded by a DNS-1123 subdomain and `/`.
pub fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(s),
    }
}

/// Whether `s` is a valid label value: empty, or like a qualified name's name part (at most
/// [`LABEL_VALUE_MAX_LEN`] bytes).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || (s.len() <= LABEL_VALUE_MAX_LEN && has_qualified_name_shape(s))
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, any length.
fn has_dns1123_label_shape(s: &str) -> bool {
    let lower_alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            lower_alnum(first)
                && lower_alnum(last)
                && b.iter().all(|c| lower_alnum(c) || *c == b'-')
        }
        _ => false,
    }
}

/// DNS-1123 label shapes joined by `.`, any length.
fn has_dns1123_subdomain_shape(s: &str) -> bool {
    s.split('.').all(has_dns1123_label_shape)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, any length.
fn has_qualified_name_shape(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_subdomains() {
        for ok in ["tor1-01", "a", "a.b-c.d", "0", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        let long_labels = format!("{}.example.net", "a".repeat(238));
        assert!(is_dns1123_subdomain(&long_labels));
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a/b",
            "a b",
            "é",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn dns1123_labels() {
        for ok in ["default", "kube-system", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "a.b", "-a", "a-", "A", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn qualified_names() {
        for ok in [
            "app",
            "app.kubernetes.io/name",
            "a_b.c-D9",
            "Example",
            &"x".repeat(63),
        ] {
            assert!(is_qualified_name(ok), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "-a",
            "a/b/c",
            "Example.com/a",
            "bad key!",
            &"x".repeat(64),
        ] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        assert!(is_qualified_name_part("a.b"));
        assert!(!is_qualified_name_part("a/b"));
    }

    #[test]
    fn label_values() {
        for ok in ["", "v1.2_3-x", "UPPER_ok", "tor1-01", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-leading", "trailing.", "has space", "a/b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
