//! The spec hash of a cached DeviceProcess, computed once per spec rather than once per
//! question.
//!
//! A reconcile asks whether each DeviceProcess of its deployment runs its current spec
//! (the status's `observedSpecHash` against the hash of the spec) for the counts, for the
//! availability of each device and for the rollout gate; during a rollout the deployment is
//! reconciled again at each batch of status changes, so at 10,000 devices the canonical JSON
//! and SHA-256 of the same unchanged specs made up a sixth of the controller's CPU.
//!
//! The API server bumps `metadata.generation` on every change of a custom resource's spec
//! (and on nothing else, the status being a subresource), so `(uid, generation)` names one
//! spec: the memo keeps the last hash per uid and recomputes when the generation moved. An
//! object without uid or generation (built locally, never stored) is hashed every time. The
//! memo is bounded: past [`MAX_ENTRIES`] it starts over. The controller holds one
//! [`SpecHashes`] in its reconcile context and hands it to the pure functions of
//! [`crate::plan`] and [`crate::rollout`] that need a hash.

use std::sync::{Arc, Mutex};

use apollo_api::{DeviceProcess, spec_hash};
use foldhash::HashMap;

/// Entries kept before the memo starts over (about 150 bytes each: 20 MiB at most).
pub const MAX_ENTRIES: usize = 131_072;

/// The spec hashes of the cached DeviceProcesses, by uid: `uid → (generation, spec hash)`.
/// One per controller (in the reconcile context), shared by its reconciles.
#[derive(Debug, Default)]
pub struct SpecHashes {
    memo: Mutex<HashMap<String, (i64, Arc<str>)>>,
}

impl SpecHashes {
    /// The spec hash of `dp` ([`apollo_api::spec_hash()`] of its spec).
    pub fn of(&self, dp: &DeviceProcess) -> Arc<str> {
        let (Some(uid), Some(generation)) = (dp.metadata.uid.as_deref(), dp.metadata.generation)
        else {
            return Arc::from(spec_hash(&dp.spec));
        };
        let lock = || {
            self.memo
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some((g, hash)) = lock().get(uid)
            && *g == generation
        {
            return hash.clone();
        }
        // Hashed outside the lock: reconciles of other deployments keep using the memo.
        let hash: Arc<str> = Arc::from(spec_hash(&dp.spec));
        let mut memo = lock();
        if memo.len() >= MAX_ENTRIES && !memo.contains_key(uid) {
            memo.clear();
        }
        memo.insert(uid.to_owned(), (generation, hash.clone()));
        hash
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_api::DeviceProcessSpec;

    fn dp(uid: Option<&str>, generation: Option<i64>, arg: &str) -> DeviceProcess {
        let spec: DeviceProcessSpec = serde_json::from_value(serde_json::json!({
            "deviceRef": {"name": "tor1-01"},
            "execution": {"backend": "container", "command": ["/bin/logger"], "args": [arg]},
            "artifact": {"type": "oci", "url": "registry.example/logger:1"},
        }))
        .unwrap();
        let mut dp = DeviceProcess::new("dp", spec);
        dp.metadata.uid = uid.map(str::to_owned);
        dp.metadata.generation = generation;
        dp
    }

    #[test]
    fn a_new_generation_is_hashed_again() {
        let hashes = SpecHashes::default();
        let of = |dp: &DeviceProcess| hashes.of(dp);
        let v1 = dp(Some("uid-memo-1"), Some(1), "v1");
        assert_eq!(&*of(&v1), spec_hash(&v1.spec));
        assert_eq!(of(&v1), of(&v1), "the same spec");
        // The spec changed and the API server bumped the generation.
        let v2 = dp(Some("uid-memo-1"), Some(2), "v2");
        assert_eq!(&*of(&v2), spec_hash(&v2.spec));
        assert_ne!(of(&v1), of(&v2));
        assert_eq!(hashes.len(), 1, "one entry per object");
    }

    #[test]
    fn objects_never_stored_are_hashed_every_time() {
        let hashes = SpecHashes::default();
        let of = |dp: &DeviceProcess| hashes.of(dp);
        let a = dp(None, None, "a");
        let b = dp(None, None, "b");
        assert_eq!(&*of(&a), spec_hash(&a.spec));
        assert_eq!(&*of(&b), spec_hash(&b.spec));
        let no_generation = dp(Some("uid-memo-2"), None, "c");
        assert_eq!(&*of(&no_generation), spec_hash(&no_generation.spec));
        assert!(hashes.is_empty(), "nothing to remember them by");
    }
}
