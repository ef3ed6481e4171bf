//! Labelled families: one metric instance per combination of label values.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// A set of metrics of one kind keyed by label values (e.g. topic and partition).
pub struct Family<M> {
    labels: &'static [&'static str],
    members: RwLock<BTreeMap<Vec<String>, Arc<M>>>,
    make: fn() -> M,
}

impl<M> Family<M> {
    /// A family whose members are labelled with `labels` and created by `make`.
    pub fn new(labels: &'static [&'static str], make: fn() -> M) -> Self {
        Self {
            labels,
            members: RwLock::new(BTreeMap::new()),
            make,
        }
    }

    /// The member for these label values (created on first use). Values are in the
    /// order of the family's label names.
    pub fn with(&self, values: &[&str]) -> Arc<M> {
        debug_assert_eq!(values.len(), self.labels.len());
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        if let Some(m) = self.members.read().get(&key) {
            return Arc::clone(m);
        }
        Arc::clone(
            self.members
                .write()
                .entry(key)
                .or_insert_with(|| Arc::new((self.make)())),
        )
    }

    /// Label names.
    pub fn labels(&self) -> &'static [&'static str] {
        self.labels
    }

    /// Every member with its label values, in label order.
    pub fn members(&self) -> Vec<(Vec<String>, Arc<M>)> {
        self.members
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }
}
