//! Kafka client settings from the operator: `--kafka-config FILE` (the Java
//! properties format Kafka's own tools read with `--command-config`) and
//! repeatable `-X key=value` (kcat's convention), applied, in that order and
//! later winning, to every client presence creates — consumers, producers
//! and admin clients — after presence's own settings (docs/operations.md,
//! "Kafka client settings").
//!
//! Settings that presence's guarantees rest on are refused, naming why;
//! every other one is checked against librdkafka before any work, so an
//! unknown or invalid setting is one line naming it. Values of secret
//! settings (passwords, key material, OAuth parameters) never appear in
//! what presence prints: [`ClientSettings`]'s `Debug` and every error here
//! show them as `***`.

use std::fmt;
use std::path::{Path, PathBuf};

use rdkafka::config::ClientConfig;

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The properties file cannot be read.
    #[error("cannot read --kafka-config {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `key=value`.
    #[error("{origin}: expected key=value, found {line:?}")]
    Syntax {
        /// Where: the file and line, or `-X`.
        origin: String,
        /// The line (secret values already hidden: a line without `=` has none).
        line: String,
    },
    /// A setting presence's guarantees rest on.
    #[error("{origin}: Kafka setting {key} cannot be changed: {why}")]
    Refused {
        /// Where it was given.
        origin: String,
        /// The key.
        key: String,
        /// Why presence needs its own value.
        why: &'static str,
    },
    /// librdkafka does not know the key or refuses the value.
    #[error("{origin}: Kafka setting {key}: {reason}")]
    Invalid {
        /// Where it was given.
        origin: String,
        /// The key.
        key: String,
        /// librdkafka's explanation, secret values hidden.
        reason: String,
    },
}

impl SettingsError {
    /// Whether the flags are at fault (a refused or malformed setting: exit
    /// status 2), rather than a file that cannot be read.
    pub fn is_usage(&self) -> bool {
        !matches!(self, SettingsError::Unreadable { .. })
    }
}

/// One setting and where it came from (for errors).
#[derive(Clone, PartialEq, Eq)]
struct Setting {
    key: String,
    value: String,
    origin: String,
}

/// The operator's client settings, in the order given (later wins).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    settings: Vec<Setting>,
}

/// Settings presence sets itself because a guarantee rests on them, and why
/// (docs/operations.md lists them; a test checks the list).
pub const REFUSED: &[(&str, &str)] = &[
    ("bootstrap.servers", "name the brokers with --brokers"),
    ("metadata.broker.list", "name the brokers with --brokers"),
    ("group.id", "name the consumer group with --group-id"),
    (
        "enable.idempotence",
        "the output topics rest on an idempotent producer (no duplicate or reordered row on a retry); presence always sets it to true",
    ),
    (
        "acks",
        "an idempotent producer needs every in-sync replica's acknowledgement (acks=all), and the progress frontier counts only acknowledged rows",
    ),
    (
        "request.required.acks",
        "an idempotent producer needs every in-sync replica's acknowledgement (acks=all), and the progress frontier counts only acknowledged rows",
    ),
    (
        "transactional.id",
        "presence's guarantees rest on upserts and the progress topic, not on Kafka transactions",
    ),
    (
        "partitioner",
        "a row's key must land on the same output partition in every run, or a restart could leave its old value behind on another partition",
    ),
    (
        "enable.auto.commit",
        "presence commits to --group-id exactly the offsets its checkpoints (or progress frontiers) reflect, and nothing else",
    ),
    (
        "enable.auto.offset.store",
        "presence commits to --group-id exactly the offsets its checkpoints (or progress frontiers) reflect, and nothing else",
    ),
    (
        "auto.offset.reset",
        "presence starts every partition at an offset it chose; a partition whose records were deleted before they were read is an error, never a silent jump",
    ),
    (
        "check.crcs",
        "a record that fails its CRC check is rejected as `corrupt`, one by one, which needs the checks on",
    ),
];

/// Whether `key`'s value is a secret: never printed.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.starts_with("sasl.oauthbearer.")
        || key == "sasl.username"
        || matches!(
            key.as_str(),
            "ssl.key.pem" | "ssl_key" | "ssl.keystore.location" | "sasl.kerberos.keytab"
        )
}

/// `value` as it may be printed for `key`.
fn shown<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "***"
    } else {
        value
    }
}

impl ClientSettings {
    /// The settings of a properties file, then of each `-X key=value`.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Self, SettingsError> {
        let mut settings = ClientSettings::default();
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| SettingsError::Unreadable {
                    path: path.to_owned(),
                    source,
                })?;
            settings.add_properties(&text, &path.display().to_string())?;
        }
        for item in overrides {
            settings.add_pair(item, "-X".to_owned())?;
        }
        settings.check()?;
        Ok(settings)
    }

    /// Adds the settings of a Java properties text: `key=value` or
    /// `key: value` lines, `#` and `!` comments, blank lines, and lines
    /// continued by a trailing backslash.
    pub fn add_properties(&mut self, text: &str, origin: &str) -> Result<(), SettingsError> {
        let mut pending = String::new();
        let mut first_line = 0;
        for (index, line) in text.lines().enumerate() {
            let line = if pending.is_empty() {
                first_line = index + 1;
                let trimmed = line.trim_start();
                if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                    continue;
                }
                trimmed
            } else {
                line.trim_start()
            };
            // An odd number of trailing backslashes continues the line.
            let trailing = line.len() - line.trim_end_matches('\\').len();
            if trailing % 2 == 1 {
                pending.push_str(&line[..line.len() - 1]);
                continue;
            }
            pending.push_str(line);
            let entry = std::mem::take(&mut pending);
            self.add_entry(&entry, format!("{origin} line {first_line}"), &['=', ':'])?;
        }
        if !pending.is_empty() {
            self.add_entry(&pending, format!("{origin} line {first_line}"), &['=', ':'])?;
        }
        Ok(())
    }

    /// Adds one `key=value` (an `-X` argument).
    pub fn add_pair(&mut self, item: &str, origin: String) -> Result<(), SettingsError> {
        self.add_entry(item, origin, &['='])
    }

    fn add_entry(
        &mut self,
        entry: &str,
        origin: String,
        separators: &[char],
    ) -> Result<(), SettingsError> {
        let Some((key, value)) = entry.split_once(separators) else {
            return Err(SettingsError::Syntax {
                origin,
                line: entry.trim().to_owned(),
            });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(SettingsError::Syntax {
                origin,
                line: format!("={}", shown("password", value)),
            });
        }
        let value = value.trim().replace("\\\\", "\\");
        if let Some((_, why)) = REFUSED.iter().find(|(refused, _)| *refused == key) {
            return Err(SettingsError::Refused {
                origin,
                key: key.to_owned(),
                why,
            });
        }
        self.settings.retain(|s| s.key != key);
        self.settings.push(Setting {
            key: key.to_owned(),
            value,
            origin,
        });
        Ok(())
    }

    /// Checks every setting against librdkafka, without creating a client.
    fn check(&self) -> Result<(), SettingsError> {
        for setting in &self.settings {
            let mut config = ClientConfig::new();
            config.set(&setting.key, &setting.value);
            if let Err(error) = config.create_native_config() {
                let reason = match error {
                    rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                    other => other.to_string(),
                };
                let reason = if is_secret(&setting.key) && !setting.value.is_empty() {
                    reason.replace(&setting.value, "***")
                } else {
                    reason
                };
                return Err(SettingsError::Invalid {
                    origin: setting.origin.clone(),
                    key: setting.key.clone(),
                    reason,
                });
            }
        }
        Ok(())
    }

    /// Applies the settings to `config`, over what presence set.
    pub fn apply(&self, config: &mut ClientConfig) {
        for setting in &self.settings {
            config.set(&setting.key, &setting.value);
        }
    }

    /// The value given for `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.value.as_str())
    }

    /// Whether no setting was given.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty()
    }
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.settings
                    .iter()
                    .map(|s| (&s.key, shown(&s.key, &s.value))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_files_read_as_kafkas_tools_read_them() {
        let mut settings = ClientSettings::default();
        settings
            .add_properties(
                "# a comment\n! another\n\nsecurity.protocol=SSL\nclient.id : presence-a\n  socket.timeout.ms = 30000\nssl.ca.location=/etc/\\\n  ca.pem\n",
                "client.properties",
            )
            .unwrap();
        assert_eq!(settings.get("security.protocol"), Some("SSL"));
        assert_eq!(settings.get("client.id"), Some("presence-a"));
        assert_eq!(settings.get("socket.timeout.ms"), Some("30000"));
        assert_eq!(settings.get("ssl.ca.location"), Some("/etc/ca.pem"));
        settings.check().unwrap();
    }

    #[test]
    fn later_settings_win() {
        let mut settings = ClientSettings::default();
        settings
            .add_properties("client.id=a\nlinger.ms=50\n", "f")
            .unwrap();
        settings.add_pair("client.id=b", "-X".into()).unwrap();
        assert_eq!(settings.get("client.id"), Some("b"));
        let mut config = ClientConfig::new();
        config.set("client.id", "presence");
        settings.apply(&mut config);
        assert_eq!(config.get("client.id"), Some("b"));
        assert_eq!(config.get("linger.ms"), Some("50"));
    }

    #[test]
    fn guarantees_are_refused_with_a_reason() {
        for key in [
            "enable.idempotence",
            "check.crcs",
            "enable.auto.commit",
            "group.id",
        ] {
            let error = ClientSettings::load(None, &[format!("{key}=false")]).unwrap_err();
            let text = error.to_string();
            assert!(
                text.starts_with(&format!("-X: Kafka setting {key} cannot be changed: ")),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_and_invalid_settings_name_the_key_and_hide_secrets() {
        let text = ClientSettings::load(None, &["no.such.setting=1".into()])
            .unwrap_err()
            .to_string();
        assert!(text.contains("Kafka setting no.such.setting"), "{text}");
        let text = ClientSettings::load(None, &["socket.timeout.ms=soon".into()])
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("Kafka setting socket.timeout.ms: Invalid value"),
            "{text}"
        );
        let text = ClientSettings::load(None, &["sasl.mechanism".into()])
            .unwrap_err()
            .to_string();
        assert!(text.contains("expected key=value"), "{text}");
        let settings = ClientSettings::load(
            None,
            &["sasl.password=hunter2".into(), "client.id=x".into()],
        )
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("***"),
            "{debug}"
        );
    }
}
