//! String formats that CRD schemas may declare (`format:`), as the apiserver checks them
//! (kube-openapi `strfmt` default registry, filtered by the apiextensions supported list).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use regex::Regex;

/// Formats the apiserver validates for `type: string` (after removing `-`, as go-openapi
/// normalises names). Other formats are ignored, as the apiserver strips them.
const SUPPORTED: &[&str] = &[
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
    "k8sshortname",
    "k8slongname",
];

/// The effective format of a schema node: `None` when the apiserver would strip it.
pub(crate) fn effective(ty: Option<&str>, format: &str) -> Option<String> {
    if format.is_empty() {
        return None;
    }
    match ty {
        None | Some("string") => {
            let norm = format.replace('-', "");
            SUPPORTED
                .contains(&norm.as_str())
                .then(|| format.to_string())
        }
        Some("integer") => matches!(format, "int32" | "int64").then(|| format.to_string()),
        Some("number") => matches!(format, "float" | "double").then(|| format.to_string()),
        _ => None,
    }
}

/// Whether `format` is a string format (validated by the format validator).
pub(crate) fn is_string_format(format: &str) -> bool {
    SUPPORTED.contains(&format.replace('-', "").as_str())
}

/// Whether `s` matches the constant pattern `p` (compiled once, then cached).
fn re(p: &'static str, s: &str) -> bool {
    static CACHE: LazyLock<Mutex<HashMap<&'static str, Option<Regex>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let Ok(mut cache) = CACHE.lock() else {
        return false;
    };
    cache
        .entry(p)
        .or_insert_with(|| Regex::new(p).ok())
        .as_ref()
        .is_some_and(|r| r.is_match(s))
}

/// Whether `s` is valid for the (supported) string format.
pub(crate) fn validate(format: &str, s: &str) -> bool {
    match format.replace('-', "").as_str() {
        "password" => true,
        "bsonobjectid" => s.len() == 24 && s.chars().all(|c| c.is_ascii_hexdigit()),
        "uri" => is_request_uri(s),
        "email" => is_email(s),
        "hostname" => is_hostname(s),
        "ipv4" => parse_ipv4(s) && s.contains('.'),
        "ipv6" => parse_ipv6(s) && s.contains(':'),
        "cidr" => is_cidr(s),
        "mac" => is_mac(s),
        "uuid" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
            s,
        ),
        "uuid3" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$",
            s,
        ),
        "uuid4" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
            s,
        ),
        "uuid5" => re(
            r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$",
            s,
        ),
        "isbn" => is_isbn10(s) || is_isbn13(s),
        "isbn10" => is_isbn10(s),
        "isbn13" => is_isbn13(s),
        "creditcard" => is_credit_card(s),
        "ssn" => s.len() == 11 && re(r"^\d{3}[- ]?\d{2}[- ]?\d{4}$", s),
        "hexcolor" => re(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$", s),
        "rgbcolor" => re(
            r"^rgb\(\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*,\s*(0|[1-9]\d?|1\d\d?|2[0-4]\d|25[0-5])\s*\)$",
            s,
        ),
        "byte" => is_base64(s),
        "date" => is_date(s),
        "datetime" => is_date_time(s),
        "duration" => is_duration(s),
        // The apiserver's own name rules (apollo-names), not another copy of their regexes.
        "k8sshortname" => apollo_names::is_dns1123_label(s),
        "k8slongname" => apollo_names::is_dns1123_subdomain(s),
        _ => true,
    }
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    if !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= days
}

fn is_date_time(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let parts: Vec<&str> = lower.split('t').collect();
    if parts.len() < 2 || !is_date(parts[0]) {
        return false;
    }
    let t = parts[1];
    if !re(
        r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$",
        t,
    ) {
        return false;
    }
    let (h, m, sec) = (&t[0..2], &t[3..5], &t[6..8]);
    h <= "23" && m <= "59" && sec <= "59"
}

fn is_duration(s: &str) -> bool {
    // Go time.ParseDuration syntax, or the strfmt "<n> <unit>" form.
    if re(r"^[-+]?([0-9]*(\.[0-9]*)?[a-zµμ]+)+$", s) && !s.is_empty() && s != "-" && s != "+" {
        let units = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"];
        let mut rest = s.trim_start_matches(['-', '+']);
        if rest == "0" {
            return true;
        }
        while !rest.is_empty() {
            let n = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if n == 0 {
                return false;
            }
            rest = &rest[n..];
            let u = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            if !units.contains(&&rest[..u]) {
                return false;
            }
            rest = &rest[u..];
        }
        return true;
    }
    s == "0"
        || re(
            r"^[0-9]+\s*(ns|nanos?|nanoseconds?|us|µs|micros?|microseconds?|ms|millis?|milliseconds?|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|wk|weeks?)$",
            s,
        )
}

fn is_base64(s: &str) -> bool {
    re(
        r"^(?:[A-Za-z0-9+\/]{4})*(?:[A-Za-z0-9+\/]{2}==|[A-Za-z0-9+\/]{3}=|[A-Za-z0-9+\/]{4})$",
        s,
    )
}

fn parse_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
                && p.parse::<u32>().is_ok_and(|v| v <= 255)
        })
}

fn parse_ipv6(s: &str) -> bool {
    // Accepts the forms Go's net.ParseIP accepts, including an embedded IPv4 tail.
    let (head, v4) = match s.rfind(':') {
        Some(i) if s[i + 1..].contains('.') => (&s[..=i], Some(&s[i + 1..])),
        _ => (s, None),
    };
    if let Some(v4) = v4
        && !parse_ipv4(v4)
    {
        return false;
    }
    let groups_needed = if v4.is_some() { 6 } else { 8 };
    let head = if v4.is_some() {
        // keep "::" intact; drop a single trailing ':'
        if head.ends_with("::") {
            head
        } else {
            &head[..head.len() - 1]
        }
    } else {
        head
    };
    let ok_group =
        |g: &str| !g.is_empty() && g.len() <= 4 && g.chars().all(|c| c.is_ascii_hexdigit());
    if let Some((a, b)) = head.split_once("::") {
        if b.contains("::") {
            return false;
        }
        let ga: Vec<&str> = if a.is_empty() {
            vec![]
        } else {
            a.split(':').collect()
        };
        let gb: Vec<&str> = if b.is_empty() {
            vec![]
        } else {
            b.split(':').collect()
        };
        ga.iter().chain(gb.iter()).all(|g| ok_group(g)) && ga.len() + gb.len() < groups_needed
    } else {
        let g: Vec<&str> = head.split(':').collect();
        g.len() == groups_needed && g.iter().all(|x| ok_group(x))
    }
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    if bits.is_empty()
        || !bits.bytes().all(|c| c.is_ascii_digit())
        || (bits.len() > 1 && bits.starts_with('0'))
    {
        return false;
    }
    let Ok(n) = bits.parse::<u32>() else {
        return false;
    };
    if parse_ipv4(ip) {
        n <= 32
    } else if parse_ipv6(ip) {
        n <= 128
    } else {
        false
    }
}

fn is_mac(s: &str) -> bool {
    let hex2 = |g: &str| g.len() == 2 && g.chars().all(|c| c.is_ascii_hexdigit());
    let hex4 = |g: &str| g.len() == 4 && g.chars().all(|c| c.is_ascii_hexdigit());
    for sep in [':', '-'] {
        let g: Vec<&str> = s.split(sep).collect();
        if matches!(g.len(), 6 | 8 | 20) && g.iter().all(|x| hex2(x)) {
            return true;
        }
    }
    let g: Vec<&str> = s.split('.').collect();
    matches!(g.len(), 3 | 4 | 10) && g.iter().all(|x| hex4(x))
}

fn is_hostname(s: &str) -> bool {
    if s.len() > 255 || s.split('.').any(|p| p.len() > 63) {
        return false;
    }
    re(
        r"^([a-zA-Z0-9\pL]((-?[a-zA-Z0-9\pL]{0,62})?)|([a-zA-Z0-9\pL](([a-zA-Z0-9\-\pL]{0,61}[a-zA-Z0-9\pL])?)(\.)){1,}([a-zA-Z\pL]){2,63})$",
        s,
    )
}

fn is_email(s: &str) -> bool {
    // net/mail.ParseAddress: "local@domain" or "Name <local@domain>".
    let addr = match (s.find('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b && b == s.len() - 1 => &s[a + 1..b],
        (None, None) => s.trim(),
        _ => return false,
    };
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !addr.contains(char::is_whitespace)
        && !local.contains('@')
}

fn is_request_uri(s: &str) -> bool {
    // url.ParseRequestURI: an absolute URI (scheme:...) or an absolute path.
    if s.is_empty() || s.contains(char::is_whitespace) {
        return false;
    }
    if s.starts_with('/') {
        return true;
    }
    match s.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        }
        None => false,
    }
}

fn is_isbn10(s: &str) -> bool {
    let d: Vec<char> = s.chars().filter(|c| *c != '-' && *c != ' ').collect();
    if d.len() != 10 {
        return false;
    }
    let mut sum = 0u32;
    for (i, c) in d.iter().enumerate() {
        let v = if i == 9 && (*c == 'X' || *c == 'x') {
            10
        } else if let Some(v) = c.to_digit(10) {
            v
        } else {
            return false;
        };
        sum += v * (10 - i as u32);
    }
    sum.is_multiple_of(11)
}

fn is_isbn13(s: &str) -> bool {
    let d: Vec<u32> = s
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .filter_map(|c| c.to_digit(10))
        .collect();
    let raw = s.chars().filter(|c| *c != '-' && *c != ' ').count();
    if d.len() != 13 || raw != 13 {
        return false;
    }
    let sum: u32 = d
        .iter()
        .enumerate()
        .map(|(i, v)| if i % 2 == 0 { *v } else { v * 3 })
        .sum();
    sum.is_multiple_of(10)
}

fn is_credit_card(s: &str) -> bool {
    let digits: String = s.chars().filter(|c| c.is_ascii_digit()).collect();
    if !re(
        r"^(?:4[0-9]{12}(?:[0-9]{3})?|5[1-5][0-9]{14}|(222[1-9]|22[3-9][0-9]|2[3-6][0-9]{2}|27[01][0-9]|2720)[0-9]{12}|6(?:011|5[0-9][0-9])[0-9]{12}|3[47][0-9]{13}|3(?:0[0-5]|[68][0-9])[0-9]{11}|(?:2131|1800|35\d{3})\d{11}|6[27][0-9]{14})$",
        &digits,
    ) {
        return false;
    }
    let mut sum = 0;
    for (i, c) in digits.chars().rev().enumerate() {
        let mut v = c.to_digit(10).unwrap_or(0);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn common_formats() {
        assert!(validate("date-time", "2024-01-02T03:04:05Z"));
        assert!(validate("date-time", "2024-01-02T03:04:05.123+01:00"));
        assert!(!validate("date-time", "2024-01-02 03:04:05Z"));
        assert!(!validate("date-time", "2024-01-02T03:04:05"));
        assert!(!validate("date-time", "yesterday"));
        assert!(validate("date", "2024-02-29"));
        assert!(!validate("date", "2023-02-29"));
        assert!(validate("ipv4", "10.0.0.1"));
        assert!(!validate("ipv4", "10.0.0.256"));
        assert!(!validate("ipv4", "10.0.0.01"));
        assert!(validate("ipv6", "fe80::1"));
        assert!(validate("ipv6", "::ffff:10.0.0.1"));
        assert!(!validate("ipv6", "fe80:::1"));
        assert!(validate("cidr", "10.0.0.0/8"));
        assert!(!validate("cidr", "10.0.0.0/33"));
        assert!(validate("mac", "00:1a:2b:3c:4d:5e"));
        assert!(!validate("mac", "00:1a:2b:3c:4d"));
        assert!(validate("uuid", "123e4567-e89b-12d3-a456-426614174000"));
        assert!(!validate("uuid", "123e4567"));
        assert!(validate("hostname", "tor1-01.example.com"));
        assert!(!validate("hostname", "-bad"));
        assert!(validate("byte", "aGVsbG8="));
        assert!(!validate("byte", "aGVsbG8"));
        assert!(validate("duration", "1h30m"));
        assert!(validate("duration", "5 seconds"));
        assert!(!validate("duration", "soon"));
        assert!(validate("k8s-short-name", "tor1-01"));
        assert!(!validate("k8s-short-name", "Tor1"));
        assert!(validate("email", "ops@example.com"));
        assert!(!validate("email", "ops"));
        assert!(validate("uri", "https://example.com/x"));
        assert!(!validate("uri", "not a uri"));
    }
}
