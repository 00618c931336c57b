//! Which authenticated credentials the gateway still accepts, beyond a valid signature: the
//! per-device key-epoch floors of the revocation file (`--revocation-file`, see
//! `docs/PROTOCOL.md` §2.3) and the lowest accepted signature version
//! (`--min-auth-version`, §4.1).
//!
//! Revocation file: one `<device> <lowest accepted epoch>` per line, `#` comments and blank
//! lines ignored. A device not listed accepts every epoch. The gateway re-reads the file when
//! it changes ([`crate::reload`]). A file that does not exist (an optional ConfigMap not
//! created yet) is an empty list; one that does not parse keeps the previous list in force.

use std::collections::HashMap;

use apollo_protocol::auth::{AuthError, AuthVersion, VerifiedRequest};
use apollo_protocol::keys::MAX_EPOCH;
use apollo_protocol::wire::valid_device_name;

use crate::reload::Reloadable;

/// Errors in a revocation file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    #[error("line {line}: expected `<device> <lowest accepted epoch>`")]
    Format { line: usize },
    #[error("line {line}: invalid device name (must be a DNS-1123 subdomain)")]
    Device { line: usize },
    #[error("line {line}: epoch must be a decimal number from 0 to {MAX_EPOCH}")]
    Epoch { line: usize },
    #[error("line {line}: device listed twice")]
    Duplicate { line: usize },
    #[error("not UTF-8 text")]
    Utf8,
}

/// Per-device lowest accepted key epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    floors: HashMap<String, u32>,
}

impl RevocationList {
    /// Parses the text of a revocation file.
    pub fn parse(text: &str) -> Result<Self, RevocationError> {
        let mut floors = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(device), Some(epoch), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(RevocationError::Format { line: line_no });
            };
            if !valid_device_name(device) {
                return Err(RevocationError::Device { line: line_no });
            }
            let epoch = (epoch.len() <= 6 && epoch.bytes().all(|b| b.is_ascii_digit()))
                .then(|| epoch.parse::<u32>().ok())
                .flatten()
                .filter(|e| *e <= MAX_EPOCH)
                .ok_or(RevocationError::Epoch { line: line_no })?;
            if floors.insert(device.to_string(), epoch).is_some() {
                return Err(RevocationError::Duplicate { line: line_no });
            }
        }
        Ok(RevocationList { floors })
    }

    /// Parses file contents.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, RevocationError> {
        Self::parse(std::str::from_utf8(bytes).map_err(|_| RevocationError::Utf8)?)
    }

    /// The lowest epoch accepted for `device` (0 when not listed).
    pub fn floor(&self, device: &str) -> u32 {
        self.floors.get(device).copied().unwrap_or(0)
    }

    /// Devices listed.
    pub fn len(&self) -> usize {
        self.floors.len()
    }

    /// Whether no device is listed.
    pub fn is_empty(&self) -> bool {
        self.floors.is_empty()
    }
}

/// The checks on a request that passed signature verification.
#[derive(Debug)]
pub struct CredentialPolicy {
    /// The revocation list in force (reloaded in place).
    pub revocations: std::sync::Arc<Reloadable<RevocationList>>,
    /// Lowest accepted signature version.
    pub min_version: AuthVersion,
}

impl CredentialPolicy {
    /// No revocations, every version accepted.
    pub fn permissive() -> Self {
        CredentialPolicy {
            revocations: std::sync::Arc::new(Reloadable::new(RevocationList::default())),
            min_version: AuthVersion::V1,
        }
    }

    /// [`AuthError::Revoked`] for a key epoch below the device's floor,
    /// [`AuthError::OldVersion`] for a signature version below the minimum.
    pub fn check(&self, request: &VerifiedRequest) -> Result<(), AuthError> {
        if request.epoch < self.revocations.get().floor(&request.device) {
            return Err(AuthError::Revoked);
        }
        if request.version < self.min_version {
            return Err(AuthError::OldVersion);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_panics_on_garbage() {
        let alphabet: Vec<char> = "ab-.09 \t#\n\r\u{0}é-1x".chars().collect();
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..5000 {
            let len = (state % 40) as usize;
            let text: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            if let Ok(list) = RevocationList::parse(&text) {
                assert!(list.len() <= text.lines().count());
            }
        }
    }

    #[test]
    fn parses_floors_and_refuses_nonsense() {
        let list = RevocationList::parse(
            "# stolen 2026-11-02\ntor1-01 2\n\n  tor1-02\t1 # comment\nsw.dc1 0\n",
        )
        .unwrap();
        assert_eq!(list.floor("tor1-01"), 2);
        assert_eq!(list.floor("tor1-02"), 1);
        assert_eq!(list.floor("sw.dc1"), 0);
        assert_eq!(list.floor("other"), 0);
        assert_eq!(list.len(), 3);
        assert!(RevocationList::parse("").unwrap().is_empty());
        for (text, err) in [
            ("tor1-01", RevocationError::Format { line: 1 }),
            ("tor1-01 1 2", RevocationError::Format { line: 1 }),
            ("\nTor 1", RevocationError::Device { line: 2 }),
            ("tor1-01 -1", RevocationError::Epoch { line: 1 }),
            ("tor1-01 1000000", RevocationError::Epoch { line: 1 }),
            ("tor1-01 x", RevocationError::Epoch { line: 1 }),
            ("a 1\na 2", RevocationError::Duplicate { line: 2 }),
        ] {
            assert_eq!(RevocationList::parse(text), Err(err), "{text:?}");
        }
        assert_eq!(
            RevocationList::parse_bytes(&[0xff, 0xfe]),
            Err(RevocationError::Utf8)
        );
    }
}
