//! Parsers and evaluators must never panic, whatever the input.

use apollo_apiquery::{fields::FieldSelector, jsonpath, labels::LabelSelector, table};
use serde_json::json;

/// Deterministic pseudo-random strings over an alphabet rich in syntax characters.
fn inputs(n: usize) -> Vec<String> {
    let alphabet: Vec<char> = "ab=!,()<> \t\\'\"[]{}.*?@$:-_/0123456789inotéx\u{0}"
        .chars()
        .collect();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = next() % 24;
            (0..len)
                .map(|_| alphabet[next() % alphabet.len()])
                .collect()
        })
        .collect()
}

#[test]
fn selectors_and_jsonpath_never_panic() {
    let obj = json!({
        "metadata": {"name": "n", "labels": {"a": "b", "in": "x"}},
        "a": [1, "x", {"b": [true, null]}, [2.5]],
        "b": {"c": {"d": "e"}}
    });
    let labels = obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for s in inputs(20_000) {
        if let Ok(sel) = s.parse::<LabelSelector>() {
            let _ = sel.matches(&labels);
            // the canonical form parses again to the same selector
            let again: LabelSelector = sel
                .to_string()
                .parse()
                .unwrap_or_else(|e| panic!("{s:?} -> {sel} -> {e}"));
            assert_eq!(again, sel, "{s:?}");
        }
        if let Ok(sel) = s.parse::<FieldSelector>() {
            let _ = sel.matches(|f| Some(f.to_string()));
            let again: FieldSelector = sel
                .to_string()
                .parse()
                .unwrap_or_else(|e| panic!("{s:?} -> {sel} -> {e}"));
            assert_eq!(again, sel, "{s:?}");
        }
        let _ = jsonpath::evaluate(&s, &obj);
        let _ = jsonpath::evaluate(&format!(".a{s}"), &obj);
        let _ = jsonpath::evaluate(&format!(".a[?(@{s})]"), &obj);
    }
}

#[test]
fn table_rendering_never_panics_on_odd_objects() {
    let cols = table::crd_columns(&json!({"additionalPrinterColumns": [
        {"name": "X", "type": "date", "jsonPath": ".x"},
        {"name": "Y", "type": "integer", "jsonPath": ".y[-1]"},
        {"name": "Z", "type": "string", "jsonPath": ".z[?(@.a>1)]"},
        {"name": "Bad", "type": "string", "jsonPath": ".["}
    ]}));
    let now = jiff::Timestamp::UNIX_EPOCH;
    let items = vec![
        json!(null),
        json!([]),
        json!({"metadata": 5, "x": "9999-12-31T23:59:59Z", "y": [], "z": {"a": 2}}),
        json!({"metadata": {"name": 3, "creationTimestamp": "nope"}, "x": "-0001-01-01T00:00:00Z", "y": [1e300], "z": [{"a": "s"}]}),
    ];
    for kind in [
        "Namespace",
        "Event",
        "Secret",
        "ServiceAccount",
        "Lease",
        "RoleBinding",
        "Role",
        "Other",
    ] {
        let t = table::render(
            &table::builtin_columns(kind),
            &items,
            table::IncludeObject::Metadata,
            "1",
            None,
            now,
        );
        assert_eq!(t["rows"].as_array().map(Vec::len), Some(items.len()));
    }
    let t = table::render(
        &cols,
        &items,
        table::IncludeObject::Object,
        "1",
        Some("c"),
        now,
    );
    assert_eq!(t["rows"].as_array().map(Vec::len), Some(items.len()));
    assert_eq!(t["rows"][2]["cells"][1], json!("<invalid>"));
}
