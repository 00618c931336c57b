//! Stable names for DeviceProcesses and valid label values for any device name.
//!
//! A DeviceProcess is named `<deployment>-<device>` (the runbook's `demo-logger-tor1-01`).
//! Kubernetes object names are DNS-1123 subdomains of at most 253 characters; when the plain
//! name would be longer, it is cut and given a 10-hex-character suffix derived from both
//! inputs, so it stays valid, stable across reconciles and unique per (deployment, device).
//! Label values are limited to 63 characters of `[A-Za-z0-9._-]` starting and ending
//! alphanumeric; [`label_value`] maps any name onto that set the same way. The rules
//! themselves live in `apollo-names`.

use apollo_names::is_label_value;

/// Longest object name Kubernetes accepts for custom resources (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = apollo_names::DNS1123_SUBDOMAIN_MAX_LEN;
/// Longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE_LEN: usize = apollo_names::LABEL_VALUE_MAX_LEN;
const SUFFIX_HEX_LEN: usize = 10;

/// The DeviceProcess name for `device` in `deployment`: `<deployment>-<device>`, or a cut name
/// with a hash suffix when that exceeds [`MAX_NAME_LEN`].
pub fn device_process_name(deployment: &str, device: &str) -> String {
    let plain = format!("{deployment}-{device}");
    if plain.len() <= MAX_NAME_LEN {
        plain
    } else {
        hashed_device_process_name(deployment, device)
    }
}

/// The always-hashed form of [`device_process_name`]. The controller uses it when the plain
/// name is already taken by another (deployment, device) pair, e.g. deployment `a-b` with
/// device `c` against deployment `a` with device `b-c`.
pub fn hashed_device_process_name(deployment: &str, device: &str) -> String {
    let plain = format!("{deployment}-{device}");
    with_suffix(&plain, &suffix(&[deployment, device]), MAX_NAME_LEN)
}

/// A valid label value that stands for `value`: itself when valid, otherwise a cut, cleaned
/// prefix plus a hash suffix of the original.
pub fn label_value(value: &str) -> String {
    if is_label_value(value) {
        return value.to_owned();
    }
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    with_suffix(&cleaned, &suffix(&[value]), MAX_LABEL_VALUE_LEN)
}

/// The first [`SUFFIX_HEX_LEN`] hex characters of SHA-256 over the parts.
fn suffix(parts: &[&str]) -> String {
    let mut input = Vec::new();
    for part in parts {
        // Length-prefix each part so ("a-b","c") and ("a","b-c") differ.
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part.as_bytes());
    }
    apollo_content_hash::sha256_hex(&input, SUFFIX_HEX_LEN)
}

/// `prefix` cut so that `<prefix>-<suffix>` fits `max`, with the cut end trimmed back to an
/// alphanumeric character at both ends.
fn with_suffix(prefix: &str, suffix: &str, max: usize) -> String {
    let keep = max - SUFFIX_HEX_LEN - 1;
    let mut cut: String = prefix
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(keep)
        .collect();
    while cut
        .chars()
        .last()
        .is_some_and(|c| !c.is_ascii_alphanumeric())
    {
        cut.pop();
    }
    if cut.is_empty() {
        suffix.to_owned()
    } else {
        format!("{cut}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_names::is_dns1123_subdomain;

    #[test]
    fn runbook_names() {
        assert_eq!(
            device_process_name("demo-logger", "tor1-01"),
            "demo-logger-tor1-01"
        );
        assert_eq!(label_value("tor1-01"), "tor1-01");
        assert_eq!(label_value("demo-logger"), "demo-logger");
    }

    #[test]
    fn long_device_name_yields_valid_stable_unique_names() {
        let device = format!("{}.example.net", "a".repeat(238));
        assert_eq!(device.len(), 250);
        assert!(is_dns1123_subdomain(&device));
        let name = device_process_name("demo-logger", &device);
        assert!(is_dns1123_subdomain(&name), "{name}");
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert_eq!(name, device_process_name("demo-logger", &device));
        let other = format!("{}.example.org", "a".repeat(238));
        assert_ne!(name, device_process_name("demo-logger", &other));
        assert_ne!(name, device_process_name("demo-logger2", &device));

        let label = label_value(&device);
        assert!(is_label_value(&label), "{label}");
        assert_eq!(label.len(), MAX_LABEL_VALUE_LEN);
        assert_ne!(label, label_value(&other));
        assert_eq!(label, label_value(&device));
    }

    #[test]
    fn ambiguous_pairs_get_distinct_hashed_names() {
        assert_eq!(
            device_process_name("a-b", "c"),
            device_process_name("a", "b-c")
        );
        assert_ne!(
            hashed_device_process_name("a-b", "c"),
            hashed_device_process_name("a", "b-c")
        );
        // Pinned: sha256(be64(3) "a-b" be64(1) "c"), first 10 hex characters.
        assert_eq!(hashed_device_process_name("a-b", "c"), "a-b-c-1d413c919d");
        assert!(is_dns1123_subdomain(&hashed_device_process_name(
            "a-b", "c"
        )));
    }

    #[test]
    fn label_values_are_cleaned() {
        for raw in [
            "-leading",
            "trailing.",
            "has space",
            "UPPER_ok",
            "x".repeat(64).as_str(),
        ] {
            let v = label_value(raw);
            assert!(is_label_value(&v), "{raw:?} -> {v:?}");
        }
        assert_eq!(label_value("UPPER_ok"), "UPPER_ok");
    }
}
