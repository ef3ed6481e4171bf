//! The graph's guardrails.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::identifier::Identifier;

/// Guardrails against identifiers that would glue unrelated people together.
///
/// ```toml
/// blocklist = ["email:test@example.com", "phone:+10000000000"]
/// max_cluster_size = 1000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// Identifiers that never link records (placeholders, shared test accounts). Records
    /// still hold them, but they are not indexed, so `resolve` finds no customer for them.
    /// Written as `namespace:value` in canonical form (see `Identifier::parse`).
    pub blocklist: BTreeSet<Identifier>,
    /// The most records one customer may have. A link that would grow a customer beyond
    /// this is not made and is reported instead (see the crate docs for which links are
    /// kept). Default 1000.
    pub max_cluster_size: usize,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            blocklist: BTreeSet::new(),
            max_cluster_size: 1000,
        }
    }
}

impl GraphConfig {
    /// Whether `identifier` is on the blocklist.
    pub fn is_blocked(&self, identifier: &Identifier) -> bool {
        self.blocklist.contains(identifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_with_defaults() {
        let config: GraphConfig =
            serde_json::from_str(r#"{ "blocklist": ["email:Test@Example.com"] }"#).unwrap();
        assert_eq!(config.max_cluster_size, 1000);
        assert!(config.is_blocked(&Identifier::parse("email:test@example.com").unwrap()));
        assert!(serde_json::from_str::<GraphConfig>(r#"{ "max_size": 3 }"#).is_err());
        assert!(serde_json::from_str::<GraphConfig>(r#"{ "blocklist": ["nope"] }"#).is_err());
    }
}
