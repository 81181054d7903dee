//! `--fsync`: when the journal is flushed to the device.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When the journal is flushed to the device, as Redis's `appendfsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every write is acknowledged (writes waiting at once share
    /// one flush).
    Always,
    /// Every interval, in the background; a write asking for
    /// `Geocache-Durability: disk` has it flushed at once.
    Every(Duration),
    /// Only when a write asks for `disk`, and at shutdown.
    Never,
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Every(Duration::from_millis(100))
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Every(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match humantime::parse_duration(other) {
                Ok(d) if d >= Duration::from_millis(1) && d <= Duration::from_secs(60) => {
                    Ok(FsyncPolicy::Every(d))
                }
                Ok(_) => Err(format!("{other:?}: an interval between 1ms and 60s")),
                Err(_) => Err(format!("{other:?}: expected always, never or an interval such as 100ms")),
            },
        }
    }
}

impl Serialize for FsyncPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms_and_names_what_it_wants() {
        assert_eq!("always".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Never));
        assert_eq!("250ms".parse::<FsyncPolicy>(), Ok(FsyncPolicy::Every(Duration::from_millis(250))));
        assert!("0ms".parse::<FsyncPolicy>().unwrap_err().contains("between"));
        assert!("often".parse::<FsyncPolicy>().unwrap_err().contains("always, never"));
        assert_eq!(FsyncPolicy::default().to_string(), "100ms");
    }
}
