//! The two kinds of node names: source records and the customers they form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One row of one source table: the graph's node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordId {
    /// The source table, e.g. `crm.public.customers`.
    pub source: String,
    /// The row's canonical primary key.
    pub key: String,
}

impl RecordId {
    /// A record id from its parts.
    pub fn new(source: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.source, self.key)
    }
}

/// A customer: one connected set of records. Ids are allocated from a counter, so a lower
/// number means an older customer; written `cus_000000000042`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CustomerId(u64);

impl CustomerId {
    const PREFIX: &'static str = "cus_";

    /// The id with allocation number `n` (the first customer is 1).
    pub const fn new(n: u64) -> Self {
        Self(n)
    }

    /// The allocation number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:012}", Self::PREFIX, self.0)
    }
}

/// Text that is not a customer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid customer id {input:?} (expected `cus_` and digits)")]
pub struct ParseCustomerIdError {
    /// The input.
    pub input: String,
}

impl FromStr for CustomerId {
    type Err = ParseCustomerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix(Self::PREFIX)
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse().ok())
            .map(Self)
            .ok_or_else(|| ParseCustomerIdError {
                input: s.to_owned(),
            })
    }
}

impl Serialize for CustomerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CustomerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_id_round_trips() {
        let id = CustomerId::new(42);
        assert_eq!(id.to_string(), "cus_000000000042");
        assert_eq!("cus_000000000042".parse::<CustomerId>().unwrap(), id);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"cus_000000000042\"");
        for bad in ["cus_", "42", "cus_x1", "cus_-1"] {
            assert!(bad.parse::<CustomerId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn record_id_displays_source_and_key() {
        assert_eq!(
            RecordId::new("crm.customers", "7").to_string(),
            "crm.customers/7"
        );
    }
}
