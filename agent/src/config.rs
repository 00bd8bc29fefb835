//! The agent's config file (TOML). Every key is optional; a bad one is named in the error.

use std::path::{Path, PathBuf};

use edgeway_common::{DEFAULT_AGENT_SOCKET, DEFAULT_STATE_DIR};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// This node's name; defaults to `$NODE_NAME`, then the host name.
    pub node_name: Option<String>,
    /// Must match the plugin's `stateDir`.
    pub state_dir: PathBuf,
    pub api: ApiConfig,
    /// Seconds between resyncs of the registry against `stateDir` and the pending-DEL queue.
    pub resync_interval_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Must match the plugin's `agentSocket`.
    pub socket: PathBuf,
    /// A group allowed to use the socket. Unset: the socket is 0600 and root-only;
    /// set: it is 0660 and owned by this group.
    pub group: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_name: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            api: ApiConfig::default(),
            resync_interval_secs: 10,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: PathBuf::from(DEFAULT_AGENT_SOCKET),
            group: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        // toml's message names the key and shows the offending line.
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let absolute = |field: &'static str, p: &Path| {
            if p.is_absolute() {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("{} is not an absolute path", p.display()),
                })
            }
        };
        absolute("stateDir", &self.state_dir)?;
        absolute("api.socket", &self.api.socket)?;
        if !(1..=3600).contains(&self.resync_interval_secs) {
            return Err(ConfigError::Invalid {
                field: "resyncIntervalSecs",
                reason: format!("{} is not in 1..=3600", self.resync_interval_secs),
            });
        }
        if let Some(name) = &self.node_name {
            if name.is_empty() || name.len() > 253 {
                return Err(ConfigError::Invalid {
                    field: "nodeName",
                    reason: "must be 1 to 253 characters".into(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/edgeway"));
        assert_eq!(c.api.socket, PathBuf::from("/run/edgeway/agent.sock"));
        assert!(c.api.group.is_none());
    }

    #[test]
    fn keys_are_read() {
        let c = Config::parse(
            "nodeName = \"edge-1\"\nstateDir = \"/tmp/s\"\nresyncIntervalSecs = 3\n[api]\nsocket = \"/tmp/a.sock\"\ngroup = \"edgeway\"\n",
        )
        .unwrap();
        assert_eq!(c.node_name.as_deref(), Some("edge-1"));
        assert_eq!(c.api.group.as_deref(), Some("edgeway"));
        assert_eq!(c.resync_interval_secs, 3);
    }

    #[test]
    fn errors_name_the_field() {
        for (text, field) in [
            ("stateDir = 5", "stateDir"),
            ("stateDir = \"rel\"", "stateDir"),
            ("[api]\nsocket = \"x\"", "api.socket"),
            ("[api]\nsockett = \"/x\"", "sockett"),
            ("resyncIntervalSecs = 0", "resyncIntervalSecs"),
            ("nodeName = \"\"", "nodeName"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(field), "{text:?}: {e}");
        }
    }
}
