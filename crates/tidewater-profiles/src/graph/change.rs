//! What an operation did to the customers: the input of profile re-merging.

use std::collections::BTreeSet;

use serde::Serialize;

use super::ids::{CustomerId, RecordId};
use crate::identifier::Identifier;

/// The effect of one graph operation (or, after [`GraphChange::extend`], of several).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GraphChange {
    /// Every customer id allocated: for a new record that linked to nobody, and for the
    /// parts split off an existing customer (those are also listed in `split`).
    pub created: Vec<CustomerId>,
    /// `(absorbed, survivor)`: the absorbed id is now an alias of the survivor.
    pub merged: Vec<(CustomerId, CustomerId)>,
    /// `(kept, new)`: a customer fell apart; it kept its id for the part holding its oldest
    /// record, the other parts got the new ids (in order of their oldest record).
    pub split: Vec<(CustomerId, Vec<CustomerId>)>,
    /// Customers whose last record was deleted.
    pub removed: Vec<CustomerId>,
    /// Live customers (at the end of the change) that gained or lost records, or were
    /// created: their profiles must be merged again. Absorbed and removed ids are never
    /// here; their profiles go away.
    pub touched: BTreeSet<CustomerId>,
    /// Links the guardrails refused.
    pub guardrails: Vec<GuardrailReport>,
}

impl GraphChange {
    /// Whether nothing happened to any customer.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.merged.is_empty()
            && self.split.is_empty()
            && self.removed.is_empty()
            && self.touched.is_empty()
            && self.guardrails.is_empty()
    }

    /// Appends the effect of a later operation, so a batch can be reported as one change.
    /// `touched` stays the set of live customers to re-merge.
    pub fn extend(&mut self, later: GraphChange) {
        for (absorbed, _) in &later.merged {
            self.touched.remove(absorbed);
        }
        for removed in &later.removed {
            self.touched.remove(removed);
        }
        self.created.extend(later.created);
        self.merged.extend(later.merged);
        self.split.extend(later.split);
        self.removed.extend(later.removed);
        self.touched.extend(later.touched);
        self.guardrails.extend(later.guardrails);
    }
}

/// A link the maximum cluster size refused: `record` holds `identifier`, but linking
/// through it would have made a customer of `would_be_size` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardrailReport {
    /// The record whose identifier did not link.
    pub record: RecordId,
    /// The identifier.
    pub identifier: Identifier,
    /// The size of the customer the link would have produced.
    pub would_be_size: usize,
    /// The configured maximum.
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_drops_ids_that_went_away() {
        let (a, b, c) = (CustomerId::new(1), CustomerId::new(2), CustomerId::new(3));
        let mut first = GraphChange {
            created: vec![b],
            touched: [a, b, c].into(),
            ..GraphChange::default()
        };
        first.extend(GraphChange {
            merged: vec![(b, a)],
            removed: vec![c],
            touched: [a].into(),
            ..GraphChange::default()
        });
        assert_eq!(first.touched, [a].into());
        assert_eq!(first.created, vec![b]);
        assert_eq!(first.merged, vec![(b, a)]);
        assert!(!first.is_empty());
        assert!(GraphChange::default().is_empty());
    }
}
