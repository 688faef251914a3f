//! Settings from the environment (twelve-factor), with errors that name the
//! setting. A missing, malformed or out-of-range setting stops the program
//! at start: nothing is clamped into range behind the operator's back.
//!
//! Values are never echoed back in errors: some of them (database and broker
//! URLs) carry credentials. A setting that carries a secret is read with
//! [`Settings::secret`]: from `NAME`, or whole from the file `NAME_FILE`
//! names (Docker and Kubernetes secrets), so it need not be in the
//! environment at all.

use std::fmt::Display;
use std::ops::RangeBounds;
use std::str::FromStr;

/// A setting that is missing or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set; see .env.example for a working value")]
    Missing { name: String },
    #[error("{name} is not valid ({expected}): {reason}")]
    Invalid {
        name: String,
        expected: &'static str,
        reason: String,
    },
}

/// Where settings come from: the process environment, or a fixed list in
/// tests and tools.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct Environment;

impl Source for Environment {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
    }
}

/// Settings listed in code, as tests build them; the first of a name wins.
impl Source for Vec<(&str, &str)> {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    }
}

/// Two sources, the first winning: a tool's command-line values over the
/// environment, say.
pub struct Layered<'a>(pub &'a dyn Source, pub &'a dyn Source);

impl Source for Layered<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).or_else(|| self.1.get(name))
    }
}

/// Reads typed settings from a [`Source`].
pub struct Settings<'a> {
    source: &'a dyn Source,
}

impl<'a> Settings<'a> {
    pub fn new(source: &'a dyn Source) -> Self {
        Settings { source }
    }

    /// A setting that must be present.
    pub fn required<T>(&self, name: &str, expected: &'static str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        let raw = self.source.get(name).ok_or_else(|| ConfigError::Missing {
            name: name.to_owned(),
        })?;
        parse(name, expected, &raw)
    }

    /// A setting with a default used when it is absent.
    pub fn optional<T>(
        &self,
        name: &str,
        expected: &'static str,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.source.get(name) {
            Some(raw) => parse(name, expected, &raw),
            None => Ok(default),
        }
    }

    /// [`Self::optional`] that must also lie in `range`; `expected` says
    /// which range ("a relay count from 1 to 16").
    pub fn optional_in<T>(
        &self,
        name: &str,
        expected: &'static str,
        default: T,
        range: impl RangeBounds<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd,
        T::Err: Display,
    {
        let value = self.optional(name, expected, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                name: name.to_owned(),
                expected,
                reason: "out of range".into(),
            })
        }
    }

    /// A setting that carries a secret (a URL with a password): `NAME`, or
    /// the whole contents of the file `NAME_FILE` names, without its
    /// trailing newline. Both set is an error (which one would win is a
    /// guess); so is a file that cannot be read. `None` when neither is set.
    pub fn secret(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let file_name = format!("{name}_FILE");
        match (self.source.get(name), self.source.get(&file_name)) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                name: name.to_owned(),
                expected: "the value, or a file holding it",
                reason: format!("both {name} and {file_name} are set; keep one"),
            }),
            (Some(value), None) => Ok(Some(value)),
            (None, Some(path)) => match std::fs::read_to_string(path.trim()) {
                Ok(text) => Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned())),
                Err(error) => Err(ConfigError::Invalid {
                    name: file_name,
                    expected: "a readable file holding the value",
                    reason: error.kind().to_string(),
                }),
            },
            (None, None) => Ok(None),
        }
    }

    /// [`Self::secret`] that must be set, one way or the other.
    pub fn required_secret(&self, name: &str) -> Result<String, ConfigError> {
        self.secret(name)?.ok_or_else(|| ConfigError::Missing {
            name: format!("{name} (or {name}_FILE)"),
        })
    }

    /// A number of milliseconds, as a duration.
    pub fn millis(&self, name: &str, default_ms: u64) -> Result<std::time::Duration, ConfigError> {
        self.optional(name, "a whole number of milliseconds", default_ms)
            .map(std::time::Duration::from_millis)
    }
}

fn parse<T>(name: &str, expected: &'static str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw.trim()
        .parse()
        .map_err(|error: T::Err| ConfigError::Invalid {
            name: name.to_owned(),
            expected,
            reason: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_setting_and_never_echo_its_value() {
        let source = vec![("PORT", "secret-not-a-port")];
        let settings = Settings::new(&source);
        let error = settings
            .required::<u16>("PORT", "a port number")
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("PORT is not valid (a port number)"),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        let missing = settings
            .required::<u16>("OTHER", "a port number")
            .unwrap_err();
        assert!(missing.to_string().starts_with("OTHER is not set"));
    }

    #[test]
    fn settings_out_of_range_are_refused_not_clamped() {
        let source = vec![("WORKERS", "0"), ("PARTITIONS", "17"), ("BATCH", "5")];
        let settings = Settings::new(&source);
        let error = settings
            .optional_in("WORKERS", "a count, at least 1", 1usize, 1..)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "WORKERS is not valid (a count, at least 1): out of range"
        );
        assert!(
            settings
                .optional_in("PARTITIONS", "1 to 16", 16i64, 1..=16)
                .is_err()
        );
        assert_eq!(
            settings
                .optional_in("BATCH", "a count", 1usize, 1..)
                .unwrap(),
            5
        );
        assert_eq!(
            settings
                .optional_in("ABSENT", "a count", 7usize, 1..)
                .unwrap(),
            7
        );
    }

    #[test]
    fn the_first_layer_wins() {
        let flags = vec![("A", "flag")];
        let environment = vec![("A", "env"), ("B", "env")];
        let layered = Layered(&flags, &environment);
        assert_eq!(layered.get("A").as_deref(), Some("flag"));
        assert_eq!(layered.get("B").as_deref(), Some("env"));
        assert_eq!(layered.get("C"), None);
    }

    #[test]
    fn a_secret_comes_from_its_setting_or_whole_from_a_file() {
        let file = std::env::temp_dir().join(format!("secret-{}", std::process::id()));
        std::fs::write(&file, "postgres://app:s3cr3t@db/orders\n").unwrap();
        let path = file.display().to_string();
        let source = vec![("FROM_FILE_FILE", path.as_str()), ("PLAIN", "redis://r")];
        let settings = Settings::new(&source);
        assert_eq!(
            settings.required_secret("FROM_FILE").unwrap(),
            "postgres://app:s3cr3t@db/orders"
        );
        assert_eq!(
            settings.secret("PLAIN").unwrap().as_deref(),
            Some("redis://r")
        );
        assert_eq!(settings.secret("ABSENT").unwrap(), None);
        let missing = settings.required_secret("ABSENT").unwrap_err().to_string();
        assert!(
            missing.starts_with("ABSENT (or ABSENT_FILE) is not set"),
            "{missing}"
        );

        let both = vec![("A", "x"), ("A_FILE", path.as_str())];
        let error = Settings::new(&both).secret("A").unwrap_err().to_string();
        assert!(error.contains("both A and A_FILE"), "{error}");
        let gone = vec![("B_FILE", "/nonexistent/secret")];
        let error = Settings::new(&gone).secret("B").unwrap_err().to_string();
        assert!(error.starts_with("B_FILE is not valid"), "{error}");
        assert!(!error.contains("s3cr3t"));
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn optional_settings_fall_back_to_their_default() {
        let source = vec![("BATCH", "50")];
        let settings = Settings::new(&source);
        assert_eq!(settings.optional("BATCH", "a count", 10usize).unwrap(), 50);
        assert_eq!(settings.optional("ABSENT", "a count", 10usize).unwrap(), 10);
        assert_eq!(
            settings.millis("ABSENT_MS", 250).unwrap(),
            std::time::Duration::from_millis(250)
        );
    }
}
