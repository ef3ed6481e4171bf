//! Window configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Configuration of the event-time windows: tumbling, or hopping when `slide` is shorter
/// than `size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowConfig {
    /// Window length; windows are aligned to multiples of it since the Unix epoch.
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// Hopping windows: a window of `size` starts at every multiple of `slide`, so each
    /// event counts in about `size / slide` windows. Absent (or equal to `size`): tumbling.
    #[serde(with = "humantime_serde")]
    pub slide: Option<Duration>,
    /// How long after a window's end (in event time, measured by the watermark) events
    /// for it are still accepted; later ones are reported as late.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A partition that has delivered nothing for this long (processing time) is idle and
    /// no longer holds the watermark back.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl WindowConfig {
    /// The distance between window starts: `slide`, or `size` for tumbling windows.
    pub fn slide(&self) -> Duration {
        self.slide.unwrap_or(self.size)
    }

    /// Length of the panes that tile every window: `gcd(size, slide)` in milliseconds
    /// (the size, for tumbling windows).
    pub(crate) fn pane_ms(&self) -> u64 {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        gcd(millis(self.size), millis(self.slide()))
    }

    /// Checks that the windows are well formed: a size above zero, and a slide above zero
    /// and no longer than the size (a longer slide would leave gaps no window covers).
    pub fn validate(&self) -> Result<(), String> {
        if self.size.is_zero() {
            return Err("window size must be greater than zero".into());
        }
        let slide = self.slide();
        if slide.is_zero() || slide > self.size {
            return Err(format!(
                "window slide {} must be greater than zero and at most the size {}",
                humantime::format_duration(slide),
                humantime::format_duration(self.size)
            ));
        }
        Ok(())
    }
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            size: Duration::from_secs(60),
            slide: None,
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
        assert_eq!(c.slide(), c.size, "tumbling unless a slide is given");
        assert!(serde_json::from_str::<WindowConfig>(r#"{"sise":"5m"}"#).is_err());
        let hopping: WindowConfig = serde_json::from_str(r#"{"size":"5m","slide":"1m"}"#).unwrap();
        assert_eq!(hopping.slide(), Duration::from_secs(60));
        assert!(hopping.validate().is_ok());
    }

    #[test]
    fn validation_rejects_empty_windows_and_gaps() {
        let with = |size: u64, slide: Option<u64>| WindowConfig {
            size: Duration::from_secs(size),
            slide: slide.map(Duration::from_secs),
            ..WindowConfig::default()
        };
        assert!(with(60, None).validate().is_ok());
        assert!(with(60, Some(60)).validate().is_ok());
        assert!(with(60, Some(25)).validate().is_ok());
        assert!(with(0, None).validate().is_err());
        assert!(with(60, Some(0)).validate().is_err());
        let gap = with(60, Some(90)).validate().unwrap_err();
        assert!(gap.contains("at most the size 1m"), "{gap}");
    }
}
