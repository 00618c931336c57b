//! `apollo-gateway keys generate` and `apollo-gateway keys derive`: provisioning of the master
//! key and of device keys (`--epoch N` re-issues one device's key, see docs/PROTOCOL.md §2.3). Keys go to stdout only; nothing here logs, and errors never contain
//! key material.

use apollo_process::env::{Env, flag_or_env};
use apollo_protocol::keys::{KeyError, MAX_EPOCH, MasterKey};
use apollo_protocol::wire::valid_device_name;

use crate::config::{ConfigError, DeriveCommand, GenerateCommand, read_key_ring};

/// Errors of the `keys` subcommands.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("--device (or APOLLO_DEVICE_NAME) is required")]
    MissingDevice,
    #[error("--master-key-file (or APOLLO_MASTER_KEY_FILE) is required")]
    MissingMasterKey,
    #[error(
        "invalid device name {0:?}: must be a DNS-1123 subdomain (lowercase a-z, 0-9, '-', '.')"
    )]
    DeviceName(String),
    #[error("no key with id {0:?} in the master key file")]
    UnknownKeyId(String),
    #[error("invalid --epoch {0}: 0 to {MAX_EPOCH}")]
    Epoch(u32),
}

/// `keys generate`: the text form of a new master key (one line, no newline).
pub fn generate(cmd: &GenerateCommand) -> Result<String, KeysError> {
    let key = match &cmd.key_id {
        Some(id) => MasterKey::generate_with_id(id)?,
        None => MasterKey::generate()?,
    };
    Ok(key.to_string())
}

/// `keys derive`: the text form of the device key (one line, no newline).
pub fn derive(cmd: &DeriveCommand, env: &dyn Env) -> Result<String, KeysError> {
    let path = flag_or_env(cmd.master_key_file.clone(), env, "APOLLO_MASTER_KEY_FILE")
        .map_err(ConfigError::from)?
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or(KeysError::MissingMasterKey)?;
    let device = flag_or_env(cmd.device.clone(), env, "APOLLO_DEVICE_NAME")
        .map_err(ConfigError::from)?
        .filter(|d| !d.is_empty())
        .ok_or(KeysError::MissingDevice)?;
    if !valid_device_name(&device) {
        return Err(KeysError::DeviceName(device));
    }
    let ring = read_key_ring(&path)?;
    let master = match &cmd.key_id {
        Some(id) => ring
            .get(id)
            .ok_or_else(|| KeysError::UnknownKeyId(id.clone()))?,
        None => ring.current(),
    };
    let epoch = cmd.epoch.unwrap_or(0);
    if epoch > MAX_EPOCH {
        return Err(KeysError::Epoch(epoch));
    }
    Ok(master.derive_at(&device, epoch).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use apollo_process::env::MapEnv;
    use apollo_protocol::keys::{DeviceKey, MasterKeyRing};

    #[test]
    fn generate_then_derive() {
        let text = generate(&GenerateCommand { key_id: None }).unwrap();
        let master: MasterKey = text.parse().unwrap();
        let other = generate(&GenerateCommand {
            key_id: Some("rot2".into()),
        })
        .unwrap();
        assert!(other.starts_with("apollo-mk1:rot2:"));
        assert_ne!(text, other);
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), format!("{text}\n{other}\n")).unwrap();
        let cmd = DeriveCommand {
            master_key_file: Some(file.path().to_path_buf()),
            device: Some("tor1-01".into()),
            key_id: None,
            epoch: None,
        };
        let key: DeviceKey = derive(&cmd, &MapEnv::default()).unwrap().parse().unwrap();
        assert_eq!(key, master.derive("tor1-01"));
        // Another key id of the ring.
        let cmd2 = DeriveCommand {
            key_id: Some("rot2".into()),
            ..cmd
        };
        let key2: DeviceKey = derive(&cmd2, &MapEnv::default()).unwrap().parse().unwrap();
        let ring = MasterKeyRing::parse(&format!("{text}\n{other}\n")).unwrap();
        assert_eq!(key2, ring.get("rot2").unwrap().derive("tor1-01"));
        // Env twins.
        let env = MapEnv::from_pairs([
            ("APOLLO_MASTER_KEY_FILE", file.path().to_str().unwrap()),
            ("APOLLO_DEVICE_NAME", "tor1-02"),
        ]);
        let empty = DeriveCommand {
            master_key_file: None,
            device: None,
            key_id: None,
            epoch: None,
        };
        let key3: DeviceKey = derive(&empty, &env).unwrap().parse().unwrap();
        assert_eq!(key3, master.derive("tor1-02"));
        // A re-issued key: another secret, the epoch in its key id.
        let reissued = DeriveCommand {
            epoch: Some(3),
            ..empty
        };
        let key4: DeviceKey = derive(&reissued, &env).unwrap().parse().unwrap();
        assert_eq!(key4, master.derive_at("tor1-02", 3));
        assert_eq!(
            (key4.key_id(), key4.epoch()),
            (format!("{}.3", master.id()).as_str(), 3)
        );
        assert_ne!(key4, key3);
        let too_high = DeriveCommand {
            epoch: Some(1_000_000),
            ..reissued
        };
        assert!(matches!(derive(&too_high, &env), Err(KeysError::Epoch(_))));
    }

    #[test]
    fn derive_errors() {
        let env = MapEnv::default();
        let cmd = DeriveCommand {
            master_key_file: None,
            device: Some("d".into()),
            key_id: None,
            epoch: None,
        };
        assert!(matches!(
            derive(&cmd, &env),
            Err(KeysError::MissingMasterKey)
        ));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "apollo-mk1:k1:c2VjcmV0\n").unwrap();
        let cmd = DeriveCommand {
            master_key_file: Some(file.path().to_path_buf()),
            device: Some("Bad_Name".into()),
            key_id: None,
            epoch: None,
        };
        assert!(matches!(derive(&cmd, &env), Err(KeysError::DeviceName(_))));
        let cmd = DeriveCommand {
            device: Some("ok".into()),
            ..cmd
        };
        let err = derive(&cmd, &env).unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0"), "{err}");
    }
}
