//! Master keys, key rings and per-device keys.
//!
//! - A **master key** is 32 random bytes with a key id; text form
//!   `apollo-mk1:<key-id>:<base64url, no padding>`.
//! - A **master key ring** is one or more master keys, one per line (`#` comments and blank
//!   lines ignored). The first is current (used to derive new device keys); the others are
//!   still accepted, so a rotation can overlap.
//! - A **device key** is `HMAC-SHA256(master, "apollo-device-key/v1" || 0x00 || device)`; it
//!   carries the master key's id and the device name; text form
//!   `apollo-dk1:<key-id>:<device>:<base64url, no padding>` — the form the agent takes.
//! - A device key of **epoch** `n ≥ 1` (a re-issued key of one device, so that its older keys
//!   can be revoked without re-keying the fleet) appends `0x00 || decimal(n)` to the derivation
//!   input and writes its key id as `<master-key-id>.<n>` (see [`parse_credential_id`]).
//!
//! `Debug` of every key type redacts the secret. `Display` renders the text form *including
//! the secret* (it is what `keys generate` / `keys derive` print): never log a key with `{}`.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::wire::valid_device_name;

/// Prefix of a master key's text form.
pub const MASTER_KEY_PREFIX: &str = "apollo-mk1";
/// Prefix of a device key's text form.
pub const DEVICE_KEY_PREFIX: &str = "apollo-dk1";
/// Domain-separation label of the device-key derivation (followed by one 0x00 byte).
pub const DERIVATION_LABEL: &str = "apollo-device-key/v1";
/// Length of master and device key secrets.
pub const KEY_LEN: usize = 32;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 32;
/// Highest device key epoch (six decimal digits).
pub const MAX_EPOCH: u32 = 999_999;

/// Errors parsing keys. They never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a master key: expected `apollo-mk1:<key-id>:<base64url secret>`")]
    MasterFormat,
    #[error("not a device key: expected `apollo-dk1:<key-id>:<device>:<base64url secret>`")]
    DeviceFormat,
    #[error(
        "invalid key id {0:?}: 1-32 characters of a-z, A-Z, 0-9, `-`, `_`, optionally followed by `.<epoch>` (1-999999)"
    )]
    KeyId(String),
    #[error("invalid key epoch {0}: 0 (the original key) to 999999")]
    Epoch(u64),
    #[error("invalid device name in key (must be a DNS-1123 subdomain)")]
    DeviceName,
    #[error("key secret is not 32 bytes of unpadded base64url")]
    Secret,
    #[error("line {line}: {source}")]
    Line { line: usize, source: Box<KeyError> },
    #[error("duplicate key id {0:?} in key ring")]
    DuplicateId(String),
    #[error("key ring holds no key")]
    EmptyRing,
    #[error("system random generator failed")]
    Random,
}

/// Whether `id` is a valid key id: 1–32 of `[A-Za-z0-9_-]`.
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Split the key id a device key (and the `X-Apollo-Key-Id` header) carries into the master
/// key id and the device key epoch: `k1` → (`k1`, 0), `k1.3` → (`k1`, 3). The epoch is decimal
/// without leading zeros, 1 to [`MAX_EPOCH`]; epoch 0 is written without a suffix, so every
/// credential has exactly one spelling. `None` when malformed.
pub fn parse_credential_id(text: &str) -> Option<(&str, u32)> {
    let (id, epoch) = match text.split_once('.') {
        None => (text, 0),
        Some((id, digits)) => {
            if digits.is_empty()
                || digits.len() > 6
                || digits.starts_with('0')
                || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            (id, digits.parse().ok()?)
        }
    };
    valid_key_id(id).then_some((id, epoch))
}

/// The key id of a device key of `epoch` under master key `id` (`id`, or `id.<epoch>`).
pub fn credential_id(id: &str, epoch: u32) -> String {
    if epoch == 0 {
        id.to_string()
    } else {
        format!("{id}.{epoch}")
    }
}

fn decode_secret(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .map_err(|_| KeyError::Secret)?;
    bytes.try_into().map_err(|_| KeyError::Secret)
}

/// A master key with its key id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    secret: [u8; KEY_LEN],
    /// The HMAC key of `secret`, set up once: deriving a device key (on every request the
    /// gateway verifies) then costs the derivation's HMAC only.
    hmac: hmac::Key,
}

impl PartialEq for MasterKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.secret == other.secret
    }
}
impl Eq for MasterKey {}

impl MasterKey {
    /// A master key from its parts.
    pub fn new(id: &str, secret: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        if !valid_key_id(id) {
            return Err(KeyError::KeyId(id.to_string()));
        }
        Ok(MasterKey {
            id: id.to_string(),
            secret,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// A new random master key; the id is `k` followed by 8 random hex characters.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let mut id = [0u8; 4];
        rng.fill(&mut id).map_err(|_| KeyError::Random)?;
        Self::generate_with_id(&format!("k{}", hex::encode(id)))
    }

    /// A new random master key with the given id.
    pub fn generate_with_id(id: &str) -> Result<Self, KeyError> {
        let mut secret = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| KeyError::Random)?;
        Self::new(id, secret)
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The device key of `device` derived from this master key.
    pub fn derive(&self, device: &str) -> DeviceKey {
        derive_device_key(self, device)
    }

    /// The device key of `device` at `epoch` (0: the original key, same as [`Self::derive`]).
    pub fn derive_at(&self, device: &str, epoch: u32) -> DeviceKey {
        derive_device_key_at(self, device, epoch)
    }
}

impl FromStr for MasterKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut parts = s.trim().split(':');
        let (Some(MASTER_KEY_PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(KeyError::MasterFormat);
        };
        MasterKey::new(id, decode_secret(secret)?)
    }
}

impl fmt::Display for MasterKey {
    /// The text form, secret included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{MASTER_KEY_PREFIX}:{}:{}",
            self.id,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Master keys: the current one (first) and older ones still accepted during a rotation.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKeyRing {
    keys: Vec<MasterKey>,
}

impl MasterKeyRing {
    /// Parse a key ring file: one master key per line, the first is current; blank lines and
    /// lines starting with `#` are ignored.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = line.parse::<MasterKey>().map_err(|e| KeyError::Line {
                line: i + 1,
                source: Box::new(e),
            })?;
            keys.push(key);
        }
        Self::from_keys(keys)
    }

    /// A key ring from keys, the first being current.
    pub fn from_keys(keys: Vec<MasterKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::EmptyRing);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyError::DuplicateId(k.id.clone()));
            }
        }
        Ok(MasterKeyRing { keys })
    }

    /// The current master key (the first).
    pub fn current(&self) -> &MasterKey {
        &self.keys[0]
    }

    /// The master key with this id.
    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// All keys, current first.
    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }
}

impl From<MasterKey> for MasterKeyRing {
    fn from(key: MasterKey) -> Self {
        MasterKeyRing { keys: vec![key] }
    }
}

impl fmt::Debug for MasterKeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyRing")
            .field("ids", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish()
    }
}

/// A device key: derived from a master key (whose id it carries) and the device name.
#[derive(Clone)]
pub struct DeviceKey {
    key_id: String,
    device: String,
    secret: [u8; KEY_LEN],
    hmac: hmac::Key,
}

impl DeviceKey {
    /// A device key from its parts; `key_id` may carry an epoch (`k1.3`).
    pub fn new(key_id: &str, device: &str, secret: [u8; KEY_LEN]) -> Result<Self, KeyError> {
        if parse_credential_id(key_id).is_none() {
            return Err(KeyError::KeyId(key_id.to_string()));
        }
        if !valid_device_name(device) {
            return Err(KeyError::DeviceName);
        }
        Ok(Self::new_unchecked(key_id, device, secret))
    }

    fn new_unchecked(key_id: &str, device: &str, secret: [u8; KEY_LEN]) -> Self {
        DeviceKey {
            key_id: key_id.to_string(),
            device: device.to_string(),
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            secret,
        }
    }

    /// The key id as sent in `X-Apollo-Key-Id`: the master key's id, with `.<epoch>` for a
    /// re-issued key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The id of the master key this key was derived from (without the epoch).
    pub fn master_key_id(&self) -> &str {
        parse_credential_id(&self.key_id).map_or(self.key_id.as_str(), |(id, _)| id)
    }

    /// The key's epoch: 0 for the original key of the device, `n` for its `n`-th re-issue.
    pub fn epoch(&self) -> u32 {
        parse_credential_id(&self.key_id).map_or(0, |(_, e)| e)
    }

    /// The device this key belongs to.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// The HMAC key (for signing and verifying).
    pub fn hmac_key(&self) -> &hmac::Key {
        &self.hmac
    }

    /// The secret as lowercase hex (for test vectors and other-language implementations).
    pub fn secret_hex(&self) -> String {
        hex::encode(self.secret)
    }
}

impl PartialEq for DeviceKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id && self.device == other.device && self.secret == other.secret
    }
}
impl Eq for DeviceKey {}

impl FromStr for DeviceKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut parts = s.trim().split(':');
        let (Some(DEVICE_KEY_PREFIX), Some(id), Some(device), Some(secret), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(KeyError::DeviceFormat);
        };
        DeviceKey::new(id, device, decode_secret(secret)?)
    }
}

impl fmt::Display for DeviceKey {
    /// The text form the agent takes, secret included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{DEVICE_KEY_PREFIX}:{}:{}:{}",
            self.key_id,
            self.device,
            URL_SAFE_NO_PAD.encode(self.secret)
        )
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKey")
            .field("key_id", &self.key_id)
            .field("device", &self.device)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Derive the device key of `device` from `master`:
/// `HMAC-SHA256(key = master secret, message = "apollo-device-key/v1" || 0x00 || device)`.
///
/// The device name is not validated here (the key would simply never verify); use
/// [`DeviceKey::new`] semantics via [`crate::wire::valid_device_name`] where input is external.
pub fn derive_device_key(master: &MasterKey, device: &str) -> DeviceKey {
    derive_device_key_at(master, device, 0)
}

/// Derive the device key of `device` at `epoch` from `master`. Epoch 0 is
/// [`derive_device_key`]; epoch `n ≥ 1` appends `0x00 || decimal(n)` to the message (a device
/// name never contains 0x00, so no two inputs collide) and carries the key id
/// `<master-id>.<n>`. Epochs above [`MAX_EPOCH`] are clamped to it.
pub fn derive_device_key_at(master: &MasterKey, device: &str, epoch: u32) -> DeviceKey {
    let epoch = epoch.min(MAX_EPOCH);
    let mut ctx = hmac::Context::with_key(&master.hmac);
    ctx.update(DERIVATION_LABEL.as_bytes());
    ctx.update(&[0]);
    ctx.update(device.as_bytes());
    if epoch > 0 {
        ctx.update(&[0]);
        ctx.update(epoch.to_string().as_bytes());
    }
    let tag = ctx.sign();
    let mut secret = [0u8; KEY_LEN];
    secret.copy_from_slice(tag.as_ref());
    DeviceKey::new_unchecked(&credential_id(&master.id, epoch), device, secret)
}

/// Label of the replica key derivation (domain-separated from device keys).
pub const REPLICA_DERIVATION_LABEL: &str = "apollo-replica-key/v1";
/// The identity a replica key carries (never a device route: replica keys verify only on the
/// replica route, device keys only on device routes).
pub const REPLICA_IDENTITY: &str = "gateway-replicas";

/// Derive the key gateway replicas sign their forwarded reports with:
/// `HMAC-SHA256(key = master secret, message = "apollo-replica-key/v1" || 0x00)`, key id the
/// master key's id. Every replica holding the master key ring derives the same key; no device
/// key equals it (device keys use another label).
pub fn derive_replica_key(master: &MasterKey) -> DeviceKey {
    let mut ctx = hmac::Context::with_key(&master.hmac);
    ctx.update(REPLICA_DERIVATION_LABEL.as_bytes());
    ctx.update(&[0]);
    let tag = ctx.sign();
    let mut secret = [0u8; KEY_LEN];
    secret.copy_from_slice(tag.as_ref());
    DeviceKey::new_unchecked(&master.id, REPLICA_IDENTITY, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(id: &str, byte: u8) -> MasterKey {
        MasterKey::new(id, [byte; KEY_LEN]).unwrap()
    }

    #[test]
    fn master_key_text_round_trip_and_redaction() {
        let k = MasterKey::generate().unwrap();
        let text = k.to_string();
        assert!(text.starts_with("apollo-mk1:k"));
        assert_eq!(text.parse::<MasterKey>().unwrap(), k);
        let debug = format!("{k:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(text.rsplit(':').next().unwrap()));
        assert_ne!(MasterKey::generate().unwrap(), k);
    }

    #[test]
    fn bad_master_keys() {
        for bad in [
            "",
            "apollo-mk1",
            "apollo-mk1:k1",
            "apollo-dk1:k1:AAAA",
            "apollo-mk1:k1:AAAA",
            "apollo-mk1::AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "apollo-mk1:k 1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "apollo-mk1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA:x",
            "apollo-mk1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(bad.parse::<MasterKey>().is_err(), "{bad}");
        }
        let good = "apollo-mk1:k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(good.parse::<MasterKey>().unwrap().id(), "k1");
        // Errors never echo the secret.
        let err = "apollo-mk1:k1:c2VjcmV0c2VjcmV0"
            .parse::<MasterKey>()
            .unwrap_err();
        assert!(!err.to_string().contains("c2VjcmV0"));
    }

    #[test]
    fn device_key_derivation_and_text_form() {
        let m = master("k1", 7);
        let a = derive_device_key(&m, "tor1-01");
        let b = derive_device_key(&m, "tor1-02");
        assert_ne!(a, b);
        assert_eq!(a, m.derive("tor1-01"));
        assert_eq!(a.key_id(), "k1");
        assert_eq!(a.device(), "tor1-01");
        let text = a.to_string();
        assert!(text.starts_with("apollo-dk1:k1:tor1-01:"));
        assert_eq!(text.parse::<DeviceKey>().unwrap(), a);
        // Dotted device names survive the text form.
        let dotted = m.derive("sw.dc1.example");
        assert_eq!(dotted.to_string().parse::<DeviceKey>().unwrap(), dotted);
        // Another master key gives another device key.
        assert_ne!(derive_device_key(&master("k2", 7), "tor1-01"), a);
        assert_ne!(derive_device_key(&master("k1", 8), "tor1-01"), a);
        let debug = format!("{a:?}");
        assert!(debug.contains("tor1-01") && debug.contains("<redacted>"));
        assert!(!debug.contains(&a.secret_hex()));
        assert!(!debug.contains(text.rsplit(':').next().unwrap()));
    }

    #[test]
    fn bad_device_keys() {
        let secret = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        for bad in [
            format!("apollo-dk1:k1:{secret}"),
            format!("apollo-dk1:k1:Tor:{secret}"),
            format!("apollo-mk1:k1:tor:{secret}"),
            "apollo-dk1:k1:tor:AAAA".to_string(),
        ] {
            assert!(bad.parse::<DeviceKey>().is_err(), "{bad}");
        }
        assert!(
            format!("apollo-dk1:k1:tor:{secret}\n")
                .parse::<DeviceKey>()
                .is_ok()
        );
    }

    #[test]
    fn epochs_give_new_keys_with_their_own_key_id() {
        let m = master("k1", 7);
        let e0 = m.derive_at("tor1-01", 0);
        assert_eq!(e0, m.derive("tor1-01"));
        assert_eq!((e0.key_id(), e0.epoch()), ("k1", 0));
        let e1 = m.derive_at("tor1-01", 1);
        let e2 = m.derive_at("tor1-01", 2);
        assert_eq!(
            (e1.key_id(), e1.master_key_id(), e1.epoch()),
            ("k1.1", "k1", 1)
        );
        assert_ne!(e1.secret_hex(), e0.secret_hex());
        assert_ne!(e1.secret_hex(), e2.secret_hex());
        assert_ne!(e1.secret_hex(), m.derive_at("tor1-02", 1).secret_hex());
        let text = e2.to_string();
        assert!(text.starts_with("apollo-dk1:k1.2:tor1-01:"), "{text}");
        assert_eq!(text.parse::<DeviceKey>().unwrap(), e2);
        for (id, parsed) in [
            ("k1", Some(("k1", 0))),
            ("k1.1", Some(("k1", 1))),
            ("k1.999999", Some(("k1", 999_999))),
            ("k1.0", None),
            ("k1.01", None),
            ("k1.", None),
            ("k1.1000000", None),
            ("k1.-1", None),
            ("k1.1.2", None),
            (".1", None),
            ("", None),
        ] {
            assert_eq!(parse_credential_id(id), parsed, "{id}");
        }
        assert_eq!(credential_id("k1", 0), "k1");
        assert_eq!(credential_id("k1", 4), "k1.4");
    }

    #[test]
    fn key_ring() {
        let a = master("new", 1);
        let b = master("old", 2);
        let text = format!("# rotation in progress\n{a}\n\n  {b}  \n");
        let ring = MasterKeyRing::parse(&text).unwrap();
        assert_eq!(ring.current().id(), "new");
        assert_eq!(ring.get("old"), Some(&b));
        assert_eq!(ring.get("x"), None);
        assert_eq!(ring.keys().len(), 2);
        assert!(!format!("{ring:?}").contains(&a.to_string()));
        assert_eq!(MasterKeyRing::parse("# only\n"), Err(KeyError::EmptyRing));
        assert_eq!(
            MasterKeyRing::parse(&format!("{a}\n{a}\n")),
            Err(KeyError::DuplicateId("new".into()))
        );
        let err = MasterKeyRing::parse(&format!("{a}\nnonsense\n")).unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }
}
