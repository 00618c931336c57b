//! meta.k8s.io/v1 Table rendering.

/// A Table column definition plus the JSONPath that fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: Option<String>,
}

/// Columns of a CRD version (additionalPrinterColumns; Name first, Age default when none).
pub fn crd_columns(crd_version: &serde_json::Value) -> Vec<Column> {
    let _ = crd_version;
    Vec::new()
}

/// Columns for built-in kinds.
pub fn builtin_columns(kind: &str) -> Vec<Column> {
    let _ = kind;
    Vec::new()
}

/// What each row carries in `object` (`includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

/// Renders a Table.
pub fn render(
    columns: &[Column],
    items: &[serde_json::Value],
    include: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
    now: jiff::Timestamp,
) -> serde_json::Value {
    let _ = (
        columns,
        items,
        include,
        resource_version,
        continue_token,
        now,
    );
    serde_json::json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {}, "columnDefinitions": [], "rows": []})
}
