//! The desired document of a device: its DeviceProcesses as the agent receives them, encoded
//! once per change, with its ETag.
//!
//! The documents are derived from the [object index](crate::index), which keeps one per device
//! with objects and re-encodes it only when one of *its* objects changes in a way that shows in
//! the document (spec hash, generation, device, presence); status-only updates are a lookup.
//! The encoded body is also the source re-parsed on that rare rebuild, so a device holds its
//! processes' specs once.

use apollo_protocol::wire::{DesiredDocument, DesiredProcess, EncodedDocument};
use bytes::Bytes;

/// One encoded desired document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// The strong ETag, quotes included: `"<revision>"`.
    pub etag: String,
    /// The `200` body.
    pub body: Bytes,
}

impl From<EncodedDocument> for Doc {
    fn from(e: EncodedDocument) -> Self {
        Doc {
            etag: e.etag,
            body: e.body,
        }
    }
}

impl Doc {
    /// The document of `device` with `processes` (ordered by name whatever their order here).
    pub fn encode(device: &str, processes: Vec<DesiredProcess>) -> Doc {
        DesiredDocument::encode(device, processes).into()
    }

    /// The document of a device with nothing assigned.
    pub fn empty(device: &str) -> Doc {
        Doc::encode(device, Vec::new())
    }

    /// The revision (the ETag without its quotes).
    pub fn revision(&self) -> &str {
        self.etag.trim_matches('"')
    }

    /// The processes of the document, decoded from its body.
    pub fn processes(&self) -> Vec<DesiredProcess> {
        serde_json::from_slice::<DesiredDocument>(&self.body)
            .map(|d| d.processes)
            .unwrap_or_default()
    }
}
