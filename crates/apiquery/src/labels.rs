//! Label selector string syntax.

pub use crate::SelectorError;

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<String>,
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        Ok(LabelSelector::everything())
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
        let _ = labels;
        self.requirements.is_empty()
    }
}
