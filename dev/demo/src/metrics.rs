//! Prometheus text exposition, parsed just enough to add up samples by name and labels.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Scrape { samples }
    }

    /// Sum of the samples named `name` whose labels include every `(key, value)` of `filter`
    /// (a value of `"2xx"`-style is not special: values compare exactly).
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Lines of this scrape whose name starts with one of `prefixes` (for display).
    pub fn lines_matching(&self, names: &[&str]) -> Vec<String> {
        self.samples
            .iter()
            .filter(|s| names.iter().any(|n| s.name == *n))
            .map(|s| {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                if labels.is_empty() {
                    format!("{} {}", s.name, s.value)
                } else {
                    format!("{}{{{}}} {}", s.name, labels.join(","), s.value)
                }
            })
            .collect()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = BTreeMap::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let mut end = None;
        // key="value" pairs with escapes.
        loop {
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            for (_, c) in chars.by_ref() {
                if escaped {
                    value.push(match c {
                        'n' => '\n',
                        other => other,
                    });
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    break;
                } else {
                    value.push(c);
                }
            }
            labels.insert(key.trim().to_string(), value);
        }
        &body[end? + 1..]
    } else {
        rest
    };
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_sums() {
        let text = r#"# HELP x help
# TYPE apollo_gateway_http_requests counter
apollo_gateway_http_requests_total{route="desired",code="200"} 2
apollo_gateway_http_requests_total{code="304",route="desired"} 17
apollo_gateway_http_requests_total{route="report",code="200"} 40 1700000000
up 1
weird{a="x\"y,z}"} 3.5
"#;
        let s = Scrape::parse(text);
        assert_eq!(
            s.sum(
                "apollo_gateway_http_requests_total",
                &[("route", "desired")]
            ),
            19.0
        );
        assert_eq!(
            s.sum("apollo_gateway_http_requests_total", &[("code", "304")]),
            17.0
        );
        assert_eq!(s.sum("up", &[]), 1.0);
        assert_eq!(s.sum("weird", &[("a", "x\"y,z}")]), 3.5);
        assert_eq!(s.sum("missing", &[]), 0.0);
    }
}
