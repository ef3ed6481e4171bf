//! Unified customer profiles and the identity graph beneath them.
//!
//! [`ProfilesPipeline`] consumes Debezium change events of the configured tables
//! ([`ProfilesConfig`]), keeps each row's latest image, links rows into customers through
//! the identity graph, and stores one merged [`Profile`] per customer — all in the
//! engine's transaction. [`profile`] and [`profile_by_identifier`] read them.
//!
//! # The identity graph
//!
//! The identity graph: which records of which systems belong to one customer.
//!
//! Each source record (a row of `crm.public.customers`, `loyalty.members`, …) carries a set
//! of [`Identifier`]s — `email:ana@example.com`, `phone:+14155550123`, `loyalty_id:L-17` —
//! produced from its columns by a [`Normaliser`]. Two records that hold an equal
//! identifier are linked; each connected set of records is one customer. An
//! [`IdentityGraph`] maintains this incrementally as records are upserted and deleted,
//! over any [`GraphStore`] ([`MemoryStore`] in memory).
//!
//! # Customer ids
//!
//! Customer ids (`cus_000000000042`) are stable and deterministic: the same sequence of
//! operations yields the same ids.
//!
//! - Every record gets a first-seen sequence number when it is inserted; a record that is
//!   deleted and inserted again counts as new.
//! - Ids are allocated from a counter, so a lower id is an older customer.
//! - A new record that links to no one gets a new id.
//! - **Merge**: when records link several customers, the oldest id survives; the others
//!   become aliases of it, which [`IdentityGraph::resolve_customer`] follows (chains are
//!   flattened, so every alias points straight at a live customer).
//! - **Split**: when a customer falls apart (an identifier removed, a record deleted), the
//!   part holding its oldest record (lowest first-seen sequence) keeps the id; the other
//!   parts get new ids, allocated in order of their oldest record.
//! - **Removal**: a customer whose last record is deleted is gone, and so are the ids
//!   aliased to it (`resolve_customer` answers `None`).
//! - An upsert that both drops and adds identifiers is applied as two steps: first the
//!   dropped links (which may split), then the added links (which may merge). So a record
//!   that moves from one customer to another is first split off (getting a new id that is
//!   immediately absorbed) and then merged.
//!
//! # Guardrails
//!
//! [`GraphConfig`] holds two guardrails:
//!
//! - A **blocklist** of identifiers that never link. Records keep them in their
//!   identifier set, but they are not indexed and resolve to no customer.
//! - A **maximum cluster size**. When an upsert adds links, the record's new identifiers
//!   are considered one at a time in identifier order (namespace, then value). An
//!   identifier whose link would join the record's customer (as grown by the links
//!   accepted so far in this upsert) with another customer into more than
//!   `max_cluster_size` records is refused: the record keeps it but does not link through
//!   it, and a [`GuardrailReport`] is returned. A link that joins no other customer is
//!   always accepted. Links already made are never undone by the guardrail; a refused link
//!   is considered again only when its record is next upserted (while it still holds the
//!   identifier), so the result depends on the order of operations but is deterministic
//!   for a given order. [`RecordEntry::linked`] shows which identifiers link.
#![warn(missing_docs)]

mod error;
pub mod graph;
pub mod identifier;
pub mod pipeline;
pub mod profile;
mod service;

pub use error::ProfilesError;
pub use graph::{
    create_graph_tables, Counter, CustomerId, CustomerInfo, GraphChange, GraphConfig, GraphError,
    GraphStore, GuardrailReport, IdentityGraph, MemoryStore, ParseCustomerIdError, RecordEntry,
    RecordId, RedbReader, RedbStore, RedbStoreError,
};
pub use identifier::{Identifier, IdentifierError, NormaliseError, Normaliser};
pub use pipeline::{
    all_profiles, all_rows, create_profile_tables, profile, profile_by_identifier, Applied,
    ProfilesPipeline, RowChange, RowChangeKind,
};
pub use profile::{
    compute_profiles, merge_profile, non_numeric_value, try_merge_profile, Aggregate,
    AggregateKind, ChildConfig, IdentifierColumn, MergePolicy, Profile, ProfileDefect,
    ProfileInput, ProfilesConfig, ProfilesConfigError, Provenance, RecordRef, StoredRow,
    TableConfig,
};
pub use service::Profiles;
