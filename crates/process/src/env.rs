//! Configuration from the environment, behind a trait so parsing is testable.
//!
//! Every flag of the Apollo binaries has an `APOLLO_`-prefixed environment twin; a flag given
//! on the command line wins over its environment variable.

use std::collections::HashMap;
use std::fmt::Display;
use std::str::FromStr;

use crate::ConfigError;

/// A source of environment variables.
pub trait Env {
    /// The value of `key`, if set and valid UTF-8.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// A fixed map, for tests.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    /// A map from `(key, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).map(|v| (*v).to_owned())
    }
}

impl Env for MapEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

/// The flag's value if given, else the environment variable `key` parsed with `FromStr`, else
/// `None`. An unparsable variable is an error naming the variable and the value.
pub fn flag_or_env<T>(flag: Option<T>, env: &dyn Env, key: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    if flag.is_some() {
        return Ok(flag);
    }
    match env.var(key) {
        None => Ok(None),
        Some(value) => value.parse::<T>().map(Some).map_err(|e| ConfigError::Env {
            key: key.to_owned(),
            value,
            reason: e.to_string(),
        }),
    }
}

/// A boolean switch with an environment twin: true when the flag is set, else the variable
/// parsed as `true/false/1/0/yes/no`.
pub fn switch_or_env(flag: bool, env: &dyn Env, key: &str) -> Result<bool, ConfigError> {
    if flag {
        return Ok(true);
    }
    match env.var(key) {
        None => Ok(false),
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            _ => Err(ConfigError::Env {
                key: key.to_owned(),
                value,
                reason: "expected true or false".into(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_env() {
        let env = MapEnv::from_pairs([("APOLLO_X", "7")]);
        assert_eq!(flag_or_env(Some(3u32), &env, "APOLLO_X"), Ok(Some(3)));
        assert_eq!(flag_or_env::<u32>(None, &env, "APOLLO_X"), Ok(Some(7)));
        assert_eq!(flag_or_env::<u32>(None, &env, "APOLLO_Y"), Ok(None));
    }

    #[test]
    fn bad_env_value_is_named() {
        let env = MapEnv::from_pairs([("APOLLO_X", "seven")]);
        let err = flag_or_env::<u32>(None, &env, "APOLLO_X").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("APOLLO_X") && msg.contains("seven"), "{msg}");
    }

    #[test]
    fn switches() {
        let env = MapEnv::from_pairs([("A", "yes"), ("B", "0"), ("C", "maybe")]);
        assert_eq!(switch_or_env(false, &env, "A"), Ok(true));
        assert_eq!(switch_or_env(false, &env, "B"), Ok(false));
        assert_eq!(switch_or_env(true, &env, "B"), Ok(true));
        assert_eq!(switch_or_env(false, &env, "D"), Ok(false));
        assert!(switch_or_env(false, &env, "C").is_err());
    }
}
