//! Window configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of the tumbling event-time windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Window length; windows are aligned to multiples of it since the Unix epoch.
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// How long after a window's end (in event time, measured by the watermark) events
    /// for it are still accepted; later ones are reported as late.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A partition that has delivered nothing for this long (processing time) is idle and
    /// no longer holds the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size: Duration::from_secs(60),
            allowed_lateness: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humantime_and_rejects_unknown_fields() {
        let c: WindowConfig =
            serde_json::from_str(r#"{"size":"5m","allowed_lateness":"1s"}"#).unwrap();
        assert_eq!(c.size, Duration::from_secs(300));
        assert_eq!(c.allowed_lateness, Duration::from_secs(1));
        assert_eq!(c.idle_timeout, Duration::from_secs(10));
        assert!(serde_json::from_str::<WindowConfig>(r#"{"sise":"5m"}"#).is_err());
    }
}
