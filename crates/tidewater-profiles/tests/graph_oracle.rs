//! The incrementally maintained identity graph against a naive oracle.
//!
//! Random batches of upserts and deletes over records of three source tables, with
//! identifiers drawn from a small pool so that merges and splits are frequent. After every
//! batch the graph must equal what the oracle computes from scratch: the connected
//! components of the current records (union-find over all pairs), with ids assigned by
//! replaying the id rules on the sequence of partitions. Each operation's reported change
//! (created, merged, split, removed) must equal the oracle's as well.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use redb::ReadableDatabase;
use tidewater_profiles::{
    CustomerId, GraphChange, GraphConfig, GraphStore, Identifier, IdentityGraph, MemoryStore,
    RecordId, RedbReader, RedbStore,
};

const SOURCES: [&str; 3] = ["crm.customers", "loyalty.members", "bookings.bookings"];
const KEYS_PER_SOURCE: usize = 4;
const POOL: [&str; 8] = [
    "email:ana@example.com",
    "email:bo@example.com",
    "email:cy@example.com",
    "phone:+14155550101",
    "phone:+14155550102",
    "loyalty_id:L1",
    "loyalty_id:L2",
    "crm_id:C1",
];

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        record: usize,
        identifiers: BTreeSet<usize>,
    },
    Delete {
        record: usize,
    },
}

fn record_id(index: usize) -> RecordId {
    RecordId::new(
        SOURCES[index / KEYS_PER_SOURCE],
        (index % KEYS_PER_SOURCE).to_string(),
    )
}

fn pool() -> Vec<Identifier> {
    POOL.iter().map(|s| Identifier::parse(s).unwrap()).collect()
}

fn op() -> impl Strategy<Value = Op> {
    let records = 0..SOURCES.len() * KEYS_PER_SOURCE;
    prop_oneof![
        3 => (records.clone(), prop::collection::btree_set(0..POOL.len(), 0..=3))
            .prop_map(|(record, identifiers)| Op::Upsert { record, identifiers }),
        1 => records.prop_map(|record| Op::Delete { record }),
    ]
}

/// The events of one operation, as sorted lists so that order does not matter.
#[derive(Debug, Default, PartialEq, Eq)]
struct Events {
    created: BTreeSet<u64>,
    merged: BTreeSet<(u64, u64)>,
    split: BTreeSet<(u64, Vec<u64>)>,
    removed: BTreeSet<u64>,
}

impl Events {
    fn of(change: &GraphChange) -> Self {
        Self {
            created: change.created.iter().map(|c| c.get()).collect(),
            merged: change
                .merged
                .iter()
                .map(|(a, s)| (a.get(), s.get()))
                .collect(),
            split: change
                .split
                .iter()
                .map(|(k, new)| (k.get(), new.iter().map(|c| c.get()).collect()))
                .collect(),
            removed: change.removed.iter().map(|c| c.get()).collect(),
        }
    }
}

/// Recomputes everything from scratch on every operation.
#[derive(Default)]
struct Oracle {
    /// Record index → (first-seen sequence, identifier indexes).
    records: BTreeMap<usize, (u64, BTreeSet<usize>)>,
    /// Record index → customer number.
    customer: BTreeMap<usize, u64>,
    /// Every customer number ever issued → the live customer it resolves to.
    fate: BTreeMap<u64, Option<u64>>,
    last_seq: u64,
    last_id: u64,
}

impl Oracle {
    /// Connected components of the current records: union-find over all pairs.
    fn components(&self) -> Vec<Vec<usize>> {
        let keys: Vec<usize> = self.records.keys().copied().collect();
        let mut parent: Vec<usize> = (0..keys.len()).collect();
        fn find(parent: &mut [usize], mut i: usize) -> usize {
            while parent[i] != i {
                i = parent[i];
            }
            i
        }
        for i in 0..keys.len() {
            for j in i + 1..keys.len() {
                let (a, b) = (&self.records[&keys[i]].1, &self.records[&keys[j]].1);
                if !a.is_disjoint(b) {
                    let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                    parent[ri] = rj;
                }
            }
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.iter().enumerate() {
            let root = find(&mut parent, i);
            groups.entry(root).or_default().push(*key);
        }
        groups.into_values().collect()
    }

    fn oldest_seq(&self, part: &[usize]) -> u64 {
        part.iter().map(|r| self.records[r].0).min().unwrap()
    }

    fn fresh_id(&mut self, events: &mut Events) -> u64 {
        self.last_id += 1;
        self.fate.insert(self.last_id, Some(self.last_id));
        events.created.insert(self.last_id);
        self.last_id
    }

    /// Edges were only removed: give split parts their ids, drop empty customers.
    fn relabel_after_removal(&mut self, events: &mut Events) {
        self.customer.retain(|r, _| self.records.contains_key(r));
        let components = self.components();
        let old_ids: BTreeSet<u64> = self.fate.values().flatten().copied().collect();
        for id in old_ids {
            let mut parts: Vec<Vec<usize>> = components
                .iter()
                .filter(|part| part.iter().any(|r| self.customer.get(r) == Some(&id)))
                .cloned()
                .collect();
            if parts.is_empty() {
                for fate in self.fate.values_mut() {
                    if *fate == Some(id) {
                        *fate = None;
                    }
                }
                events.removed.insert(id);
                continue;
            }
            if parts.len() == 1 {
                continue;
            }
            parts.sort_by_key(|part| self.oldest_seq(part));
            let mut new_ids = Vec::new();
            for part in &parts[1..] {
                let new = self.fresh_id(events);
                for r in part {
                    self.customer.insert(*r, new);
                }
                new_ids.push(new);
            }
            events.split.insert((id, new_ids));
        }
    }

    /// Edges were only added: a component spanning several customers takes the oldest
    /// id; a component of new records only gets a fresh one.
    fn relabel_after_addition(&mut self, events: &mut Events) {
        for part in self.components() {
            let ids: BTreeSet<u64> = part
                .iter()
                .filter_map(|r| self.customer.get(r).copied())
                .collect();
            let survivor = match ids.first() {
                Some(oldest) => *oldest,
                None => self.fresh_id(events),
            };
            for absorbed in ids.iter().skip(1) {
                for fate in self.fate.values_mut() {
                    if *fate == Some(*absorbed) {
                        *fate = Some(survivor);
                    }
                }
                events.merged.insert((*absorbed, survivor));
            }
            for r in part {
                self.customer.insert(r, survivor);
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Events {
        let mut events = Events::default();
        match op {
            Op::Upsert {
                record,
                identifiers,
            } => {
                if let Some((_, held)) = self.records.get_mut(record) {
                    *held = held.intersection(identifiers).copied().collect();
                    self.relabel_after_removal(&mut events);
                }
                let entry = self.records.entry(*record).or_insert_with(|| {
                    self.last_seq += 1;
                    (self.last_seq, BTreeSet::new())
                });
                entry.1 = identifiers.clone();
                self.relabel_after_addition(&mut events);
            }
            Op::Delete { record } => {
                self.records.remove(record);
                self.relabel_after_removal(&mut events);
            }
        }
        events
    }

    fn resolve(&self, identifier: usize) -> Option<u64> {
        self.records
            .iter()
            .find(|(_, (_, held))| held.contains(&identifier))
            .map(|(r, _)| self.customer[r])
    }
}

fn check<S: GraphStore>(graph: &IdentityGraph<S>, oracle: &Oracle, pool: &[Identifier]) {
    // Every record's customer (this fixes the partition and the ids).
    let records = SOURCES.len() * KEYS_PER_SOURCE;
    for r in 0..records {
        let got = graph
            .customer_of(&record_id(r))
            .unwrap()
            .map(CustomerId::get);
        assert_eq!(
            got,
            oracle.customer.get(&r).copied(),
            "customer of {}",
            record_id(r)
        );
    }
    // The partition, seen from the customers' side.
    let mut expected: BTreeMap<u64, Vec<RecordId>> = BTreeMap::new();
    for (r, c) in &oracle.customer {
        expected.entry(*c).or_default().push(record_id(*r));
    }
    for (c, mut members) in expected {
        members.sort();
        assert_eq!(
            graph.members(CustomerId::new(c)).unwrap(),
            members,
            "members of {c}"
        );
    }
    for (i, identifier) in pool.iter().enumerate() {
        let got = graph.resolve(identifier).unwrap().map(CustomerId::get);
        assert_eq!(got, oracle.resolve(i), "resolve {identifier}");
    }
    for n in 1..=oracle.last_id + 1 {
        let got = graph
            .resolve_customer(CustomerId::new(n))
            .unwrap()
            .map(CustomerId::get);
        let want = oracle.fate.get(&n).copied().flatten();
        assert_eq!(got, want, "resolve_customer {n}");
    }
}

/// Every live customer whose membership changed is reported as touched, and only live
/// customers are.
fn check_touched(change: &GraphChange, before: &BTreeMap<usize, u64>, oracle: &Oracle) {
    let members = |map: &BTreeMap<usize, u64>| {
        let mut out: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
        for (r, c) in map {
            out.entry(*c).or_default().insert(*r);
        }
        out
    };
    let (old, new) = (members(before), members(&oracle.customer));
    for (c, records) in &new {
        if old.get(c) != Some(records) {
            assert!(
                change.touched.contains(&CustomerId::new(*c)),
                "{c} not touched"
            );
        }
    }
    for c in &change.touched {
        assert!(new.contains_key(&c.get()), "touched {c} is not live");
    }
}

fn config() -> GraphConfig {
    GraphConfig {
        max_cluster_size: usize::MAX,
        ..GraphConfig::default()
    }
}

/// Applies one batch to the graph and the oracle, checking every operation's change and,
/// at the end, the whole graph.
fn apply_batch<S: GraphStore>(
    graph: &mut IdentityGraph<S>,
    oracle: &mut Oracle,
    batch: &[Op],
    pool: &[Identifier],
) {
    let mut batch_change = GraphChange::default();
    let before_batch = oracle.customer.clone();
    for op in batch {
        let before = oracle.customer.clone();
        let change = match op {
            Op::Upsert {
                record,
                identifiers,
            } => graph
                .upsert_record(
                    record_id(*record),
                    identifiers.iter().map(|i| pool[*i].clone()).collect(),
                )
                .unwrap(),
            Op::Delete { record } => graph.delete_record(&record_id(*record)).unwrap(),
        };
        let expected = oracle.apply(op);
        assert_eq!(Events::of(&change), expected, "events of {op:?}");
        assert!(change.guardrails.is_empty());
        check_touched(&change, &before, oracle);
        batch_change.extend(change);
    }
    check_touched(&batch_change, &before_batch, oracle);
    check(graph, oracle, pool);
}

/// The graph over a [`MemoryStore`].
fn run(batches: &[Vec<Op>]) {
    let pool = pool();
    let mut graph = IdentityGraph::new(MemoryStore::new(), config());
    let mut oracle = Oracle::default();
    for batch in batches {
        apply_batch(&mut graph, &mut oracle, batch, &pool);
    }
}

/// The graph over redb: one write transaction per batch, checked inside it and again
/// through a read transaction after the commit.
fn run_redb(batches: &[Vec<Op>]) {
    let pool = pool();
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("graph.redb")).unwrap();
    let mut oracle = Oracle::default();
    for batch in batches {
        let txn = db.begin_write().unwrap();
        {
            let mut graph = IdentityGraph::new(RedbStore::open(&txn).unwrap(), config());
            apply_batch(&mut graph, &mut oracle, batch, &pool);
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let reader = RedbReader::open(&read).unwrap().unwrap();
        check(&IdentityGraph::new(reader, config()), &oracle, &pool);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn incremental_graph_equals_the_oracle(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..=10), 1..=6)
    ) {
        run(&batches);
    }
}

proptest! {
    // Each case opens a database and commits a transaction per batch: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_graph_in_redb_equals_the_oracle(
        batches in prop::collection::vec(prop::collection::vec(op(), 1..=10), 1..=6)
    ) {
        run_redb(&batches);
    }
}

/// A fixed sequence that exercises a merge, a split and a removal, so a regression shows
/// up even with proptest's randomness turned down.
#[test]
fn merge_split_and_remove_match_the_oracle() {
    let upsert = |record, ids: &[usize]| Op::Upsert {
        record,
        identifiers: ids.iter().copied().collect(),
    };
    let batches = [
        vec![upsert(0, &[0]), upsert(4, &[1]), upsert(8, &[0, 1])],
        vec![upsert(8, &[2]), upsert(4, &[2, 3])],
        vec![Op::Delete { record: 4 }, Op::Delete { record: 0 }],
        vec![Op::Delete { record: 8 }, upsert(0, &[0])],
    ];
    run(&batches);
    run_redb(&batches);
}
