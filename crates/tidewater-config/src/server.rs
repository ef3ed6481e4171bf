//! The `[server]` section: which Host names the HTTP API answers to, how many connections
//! it holds and for how long, and how long shutdown waits for work in progress. The API
//! itself (`tidewater-server`) sits above this crate, so its section is defined here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `[server]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Host names (without port) the API answers to, compared case-insensitively with the
    /// request's `Host`; any other name gets 421. IP addresses are always answered (a
    /// request naming an IP cannot come from DNS rebinding), and `"*"` turns the check off.
    pub allowed_hosts: Vec<String>,
    /// Most connections served at once; further ones wait in the listen queue. Unset:
    /// half of the process's open-file limit, so that connections can never use up the
    /// descriptors the log, state stores and sources need.
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's headers, from its first byte.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a connection with no request in progress is kept open (before its first
    /// request, and between requests on a keep-alive connection).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT, how long shutdown waits for in-flight requests, sources and
    /// pipelines before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["localhost".to_owned()],
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// Checks values that parse but cannot be used: what is wrong, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == Some(0) {
            return Err("server.max_connections must be at least 1".into());
        }
        for (key, value) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("server.{key} must be more than 0s"));
            }
        }
        for host in &self.allowed_hosts {
            let name = host.trim_end_matches('.');
            let valid = host == "*"
                || (!name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
            if !valid {
                return Err(format!(
                    "server.allowed_hosts: '{host}' is not a host name (give names without scheme or port, or \"*\")"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ServerConfig;

    #[test]
    fn unusable_values_are_refused() {
        assert!(ServerConfig::default().validate().is_ok());
        for bad in [
            ServerConfig {
                max_connections: Some(0),
                ..ServerConfig::default()
            },
            ServerConfig {
                header_read_timeout: std::time::Duration::ZERO,
                ..ServerConfig::default()
            },
            ServerConfig {
                allowed_hosts: vec!["example.com:8080".into()],
                ..ServerConfig::default()
            },
            ServerConfig {
                allowed_hosts: vec!["http://example.com".into()],
                ..ServerConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let star = ServerConfig {
            allowed_hosts: vec!["*".into(), "Tidewater.Example.".into()],
            ..ServerConfig::default()
        };
        assert!(star.validate().is_ok());
    }
}
