//! Stable names for DeviceProcesses and valid label values for any device name.
//!
//! A DeviceProcess is named `<deployment>-<device>` (the runbook's `demo-logger-tor1-01`).
//! Kubernetes object names are DNS-1123 subdomains of at most 253 characters; when the plain
//! name would be longer, it is cut and given a 10-hex-character suffix derived from both
//! inputs, so it stays valid, stable across reconciles and unique per (deployment, device).
//! Label values are limited to 63 characters of `[A-Za-z0-9._-]` starting and ending
//! alphanumeric; [`label_value`] maps any name onto that set the same way.

/// Longest object name Kubernetes accepts for custom resources (DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE_LEN: usize = 63;
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
    if is_valid_label_value(value) {
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

/// Whether `value` is a valid Kubernetes label value.
pub fn is_valid_label_value(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    let bytes = value.as_bytes();
    value.len() <= MAX_LABEL_VALUE_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `name` is a valid DNS-1123 subdomain (the rule for custom resource names).
pub fn is_valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn suffix(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        // Length-prefix each part so ("a-b","c") and ("a","b-c") differ.
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let mut hex = hex::encode(ctx.finish().as_ref());
    hex.truncate(SUFFIX_HEX_LEN);
    hex
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
        assert!(is_valid_object_name(&device));
        let name = device_process_name("demo-logger", &device);
        assert!(is_valid_object_name(&name), "{name}");
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert_eq!(name, device_process_name("demo-logger", &device));
        let other = format!("{}.example.org", "a".repeat(238));
        assert_ne!(name, device_process_name("demo-logger", &other));
        assert_ne!(name, device_process_name("demo-logger2", &device));

        let label = label_value(&device);
        assert!(is_valid_label_value(&label), "{label}");
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
        assert!(is_valid_object_name(&hashed_device_process_name(
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
            assert!(is_valid_label_value(&v), "{raw:?} -> {v:?}");
        }
        assert_eq!(label_value("UPPER_ok"), "UPPER_ok");
    }
}
