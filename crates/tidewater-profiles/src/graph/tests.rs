//! Unit tests of the graph's id rules and guardrails on small hand-made cases.

use std::collections::BTreeSet;

use super::*;
use crate::identifier::Identifier;

fn rec(key: &str) -> RecordId {
    RecordId::new("crm.customers", key)
}

fn ids(list: &[&str]) -> BTreeSet<Identifier> {
    list.iter().map(|s| Identifier::parse(s).unwrap()).collect()
}

fn id(s: &str) -> Identifier {
    Identifier::parse(s).unwrap()
}

fn cus(n: u64) -> CustomerId {
    CustomerId::new(n)
}

fn graph() -> IdentityGraph<MemoryStore> {
    IdentityGraph::new(MemoryStore::new(), GraphConfig::default())
}

fn graph_with(config: GraphConfig) -> IdentityGraph<MemoryStore> {
    IdentityGraph::new(MemoryStore::new(), config)
}

fn customer(g: &IdentityGraph<MemoryStore>, key: &str) -> CustomerId {
    g.customer_of(&rec(key)).unwrap().unwrap()
}

#[test]
fn new_records_get_new_ids_and_shared_identifiers_link() {
    let mut g = graph();
    let c = g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    assert_eq!(c.created, vec![cus(1)]);
    assert_eq!(c.touched, [cus(1)].into());
    let c = g.upsert_record(rec("b"), ids(&["email:b@x.io"])).unwrap();
    assert_eq!(c.created, vec![cus(2)]);
    let c = g
        .upsert_record(rec("c"), ids(&["email:a@x.io", "phone:+14155550123"]))
        .unwrap();
    assert!(
        c.created.is_empty(),
        "joining an existing customer allocates nothing"
    );
    assert_eq!(c.touched, [cus(1)].into());
    assert_eq!(g.members(cus(1)).unwrap(), vec![rec("a"), rec("c")]);
    assert_eq!(g.resolve(&id("phone:+14155550123")).unwrap(), Some(cus(1)));
    assert_eq!(g.resolve(&id("email:nobody@x.io")).unwrap(), None);
}

#[test]
fn merge_keeps_the_older_id_and_aliases_the_other() {
    let mut g = graph();
    g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("b"), ids(&["email:b@x.io"])).unwrap();
    // `b` (customer 2) gains a's email: 2 is absorbed into the older 1.
    let c = g
        .upsert_record(rec("b"), ids(&["email:a@x.io", "email:b@x.io"]))
        .unwrap();
    assert_eq!(c.merged, vec![(cus(2), cus(1))]);
    assert_eq!(c.touched, [cus(1)].into());
    assert_eq!(customer(&g, "b"), cus(1));
    assert_eq!(g.resolve_customer(cus(2)).unwrap(), Some(cus(1)));
    assert_eq!(g.resolve_customer(cus(1)).unwrap(), Some(cus(1)));
    assert_eq!(g.resolve_customer(cus(99)).unwrap(), None);
}

#[test]
fn a_record_bridging_three_customers_merges_into_the_oldest() {
    let mut g = graph();
    for (key, email) in [
        ("a", "email:a@x.io"),
        ("b", "email:b@x.io"),
        ("c", "email:c@x.io"),
    ] {
        g.upsert_record(rec(key), ids(&[email])).unwrap();
    }
    let c = g
        .upsert_record(rec("d"), ids(&["email:c@x.io", "email:b@x.io"]))
        .unwrap();
    assert_eq!(c.merged, vec![(cus(3), cus(2))]);
    let c = g
        .upsert_record(rec("e"), ids(&["email:a@x.io", "email:c@x.io"]))
        .unwrap();
    assert_eq!(c.merged, vec![(cus(2), cus(1))]);
    // The chain 3 → 2 → 1 was flattened.
    assert_eq!(g.store().alias(cus(3)).unwrap(), Some(cus(1)));
    assert_eq!(g.resolve_customer(cus(3)).unwrap(), Some(cus(1)));
    assert_eq!(g.members(cus(1)).unwrap().len(), 5);
}

#[test]
fn split_leaves_the_id_with_the_oldest_record() {
    let mut g = graph();
    // b is the bridge: a — b — c, inserted c first so c is the oldest record.
    g.upsert_record(rec("c"), ids(&["email:c@x.io"])).unwrap();
    g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("b"), ids(&["email:a@x.io", "email:c@x.io"]))
        .unwrap();
    assert_eq!(customer(&g, "a"), cus(1));
    let c = g.delete_record(&rec("b")).unwrap();
    // c (seq 1) keeps cus 1; a's part gets a new id.
    assert_eq!(customer(&g, "c"), cus(1));
    assert_eq!(customer(&g, "a"), cus(3));
    assert_eq!(c.split, vec![(cus(1), vec![cus(3)])]);
    assert_eq!(c.created, vec![cus(3)]);
    assert_eq!(c.touched, [cus(1), cus(3)].into());
    assert_eq!(g.resolve(&id("email:a@x.io")).unwrap(), Some(cus(3)));
}

#[test]
fn split_into_three_allocates_in_order_of_oldest_record() {
    let mut g = graph();
    g.upsert_record(
        rec("hub"),
        ids(&["email:x@x.io", "email:y@x.io", "email:z@x.io"]),
    )
    .unwrap();
    g.upsert_record(rec("z"), ids(&["email:z@x.io"])).unwrap();
    g.upsert_record(rec("x"), ids(&["email:x@x.io"])).unwrap();
    g.upsert_record(rec("y"), ids(&["email:y@x.io"])).unwrap();
    // The hub drops all links but z's: parts {hub, z}, {x}, {y}.
    let c = g.upsert_record(rec("hub"), ids(&["email:z@x.io"])).unwrap();
    assert_eq!(c.split, vec![(cus(1), vec![cus(2), cus(3)])]);
    assert_eq!(customer(&g, "hub"), cus(1));
    assert_eq!(customer(&g, "x"), cus(2));
    assert_eq!(customer(&g, "y"), cus(3));
}

#[test]
fn moving_a_record_splits_then_merges() {
    let mut g = graph();
    g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("b"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("c"), ids(&["email:c@x.io"])).unwrap();
    let c = g.upsert_record(rec("b"), ids(&["email:c@x.io"])).unwrap();
    // b splits off as cus 3, then cus 3 is absorbed by the older cus 2.
    assert_eq!(c.split, vec![(cus(1), vec![cus(3)])]);
    assert_eq!(c.merged, vec![(cus(3), cus(2))]);
    assert_eq!(c.touched, [cus(1), cus(2)].into());
    assert_eq!(customer(&g, "b"), cus(2));
    assert_eq!(g.members(cus(1)).unwrap(), vec![rec("a")]);
}

#[test]
fn an_update_that_keeps_connectivity_changes_nothing() {
    let mut g = graph();
    g.upsert_record(rec("a"), ids(&["email:a@x.io", "phone:+14155550123"]))
        .unwrap();
    g.upsert_record(rec("b"), ids(&["email:a@x.io", "phone:+14155550123"]))
        .unwrap();
    let c = g.upsert_record(rec("b"), ids(&["email:a@x.io"])).unwrap();
    assert!(c.is_empty(), "{c:?}");
    let c = g.upsert_record(rec("b"), ids(&["email:a@x.io"])).unwrap();
    assert!(c.is_empty(), "{c:?}");
}

#[test]
fn deleting_the_last_record_removes_the_customer_and_its_aliases() {
    let mut g = graph();
    g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("b"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("c"), ids(&["email:c@x.io", "email:a@x.io"]))
        .unwrap();
    g.upsert_record(rec("d"), ids(&["email:d@x.io"])).unwrap();
    g.upsert_record(rec("d"), ids(&["email:d@x.io", "email:c@x.io"]))
        .unwrap();
    assert_eq!(g.resolve_customer(cus(2)).unwrap(), Some(cus(1)));
    for key in ["a", "b", "c"] {
        let c = g.delete_record(&rec(key)).unwrap();
        assert!(c.removed.is_empty());
    }
    let c = g.delete_record(&rec("d")).unwrap();
    assert_eq!(c.removed, vec![cus(1)]);
    assert!(c.touched.is_empty());
    assert_eq!(g.resolve_customer(cus(1)).unwrap(), None);
    assert_eq!(g.resolve_customer(cus(2)).unwrap(), None);
    assert_eq!(g.resolve(&id("email:a@x.io")).unwrap(), None);
    assert!(
        g.delete_record(&rec("d")).unwrap().is_empty(),
        "unknown record"
    );
}

#[test]
fn a_reinserted_record_is_new() {
    let mut g = graph();
    g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("b"), ids(&["email:b@x.io"])).unwrap();
    g.upsert_record(rec("bridge"), ids(&["email:a@x.io", "email:b@x.io"]))
        .unwrap();
    assert_eq!(g.record(&rec("a")).unwrap().unwrap().seq, 1);
    g.delete_record(&rec("a")).unwrap();
    g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    assert_eq!(g.record(&rec("a")).unwrap().unwrap().seq, 4);
    assert_eq!(customer(&g, "a"), cus(1));
    // Now b (seq 2) is the oldest; removing the bridge leaves cus 1 with b.
    g.delete_record(&rec("bridge")).unwrap();
    assert_eq!(customer(&g, "b"), cus(1));
    assert_eq!(customer(&g, "a"), cus(3));
}

#[test]
fn records_of_different_sources_with_equal_keys_are_distinct() {
    let mut g = graph();
    g.upsert_record(RecordId::new("crm.customers", "1"), ids(&["email:a@x.io"]))
        .unwrap();
    g.upsert_record(
        RecordId::new("loyalty.members", "1"),
        ids(&["email:b@x.io"]),
    )
    .unwrap();
    assert_eq!(g.members(cus(1)).unwrap().len(), 1);
    assert_eq!(g.members(cus(2)).unwrap().len(), 1);
}

#[test]
fn blocklisted_identifiers_never_link() {
    let config = GraphConfig {
        blocklist: ids(&["email:test@example.com", "phone:+10000000000"]),
        ..GraphConfig::default()
    };
    let mut g = graph_with(config);
    g.upsert_record(rec("a"), ids(&["email:test@example.com", "email:a@x.io"]))
        .unwrap();
    let c = g
        .upsert_record(
            rec("b"),
            ids(&["email:test@example.com", "phone:+10000000000"]),
        )
        .unwrap();
    assert_eq!(c.created, vec![cus(2)]);
    assert!(
        c.guardrails.is_empty(),
        "the blocklist is not a reported event"
    );
    assert_ne!(customer(&g, "a"), customer(&g, "b"));
    assert_eq!(g.resolve(&id("email:test@example.com")).unwrap(), None);
    assert_eq!(g.resolve(&id("email:a@x.io")).unwrap(), Some(cus(1)));
    let entry = g.record(&rec("a")).unwrap().unwrap();
    assert_eq!(
        entry.identifiers.len(),
        2,
        "the record keeps its blocked identifier"
    );
    assert_eq!(entry.linked, ids(&["email:a@x.io"]));
}

#[test]
fn max_cluster_size_refuses_the_link_that_would_exceed_it() {
    let config = GraphConfig {
        max_cluster_size: 3,
        ..GraphConfig::default()
    };
    let mut g = graph_with(config);
    for key in ["a", "b", "c"] {
        let c = g
            .upsert_record(rec(key), ids(&["email:shared@x.io"]))
            .unwrap();
        assert!(c.guardrails.is_empty());
    }
    let c = g
        .upsert_record(rec("d"), ids(&["email:d@x.io", "email:shared@x.io"]))
        .unwrap();
    assert_eq!(
        c.guardrails,
        vec![GuardrailReport {
            record: rec("d"),
            identifier: id("email:shared@x.io"),
            would_be_size: 4,
            limit: 3,
        }]
    );
    assert_eq!(c.created, vec![cus(2)]);
    assert_eq!(customer(&g, "d"), cus(2));
    assert_eq!(g.resolve(&id("email:shared@x.io")).unwrap(), Some(cus(1)));
    assert_eq!(g.resolve(&id("email:d@x.io")).unwrap(), Some(cus(2)));
    let entry = g.record(&rec("d")).unwrap().unwrap();
    assert_eq!(entry.linked, ids(&["email:d@x.io"]));

    // Upserting d again while the cluster is full is refused again…
    let c = g
        .upsert_record(rec("d"), ids(&["email:d@x.io", "email:shared@x.io"]))
        .unwrap();
    assert_eq!(c.guardrails.len(), 1);
    // …but after the cluster shrinks the link is made on d's next upsert.
    g.delete_record(&rec("c")).unwrap();
    let c = g
        .upsert_record(rec("d"), ids(&["email:d@x.io", "email:shared@x.io"]))
        .unwrap();
    assert!(c.guardrails.is_empty());
    assert_eq!(c.merged, vec![(cus(2), cus(1))]);
    assert_eq!(g.members(cus(1)).unwrap().len(), 3);
}

#[test]
fn max_cluster_size_considers_identifiers_in_order() {
    let config = GraphConfig {
        max_cluster_size: 3,
        ..GraphConfig::default()
    };
    let mut g = graph_with(config);
    g.upsert_record(rec("a1"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("a2"), ids(&["email:a@x.io"])).unwrap();
    g.upsert_record(rec("b1"), ids(&["email:b@x.io"])).unwrap();
    g.upsert_record(rec("b2"), ids(&["email:b@x.io"])).unwrap();
    // email:a@x.io comes first: r joins a's customer (size 3); b's link would make 5.
    let c = g
        .upsert_record(rec("r"), ids(&["email:b@x.io", "email:a@x.io"]))
        .unwrap();
    assert_eq!(customer(&g, "r"), cus(1));
    assert_eq!(c.guardrails.len(), 1);
    assert_eq!(c.guardrails[0].identifier, id("email:b@x.io"));
    assert_eq!(c.guardrails[0].would_be_size, 5);
    assert!(c.created.is_empty());
    assert_eq!(g.members(cus(2)).unwrap(), vec![rec("b1"), rec("b2")]);
}

#[test]
fn a_graph_runs_over_a_borrowed_store() {
    let mut store = MemoryStore::new();
    {
        let mut g = IdentityGraph::new(&mut store, GraphConfig::default());
        g.upsert_record(rec("a"), ids(&["email:a@x.io"])).unwrap();
    }
    let g = IdentityGraph::new(&mut store, GraphConfig::default());
    assert_eq!(g.resolve(&id("email:a@x.io")).unwrap(), Some(cus(1)));
}
