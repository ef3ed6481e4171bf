//! Profiles: the configuration of source tables, the merged profile document, and the
//! pure merge that computes one customer's profile from its rows.

mod config;
mod merge;
mod model;

pub use config::{
    Aggregate, AggregateKind, ChildConfig, IdentifierColumn, MergePolicy, ProfilesConfig,
    ProfilesConfigError, TableConfig,
};
pub use merge::{
    child_link, compute_profiles, merge_profile, non_numeric_value, row_identifiers,
    try_merge_profile, ProfileDefect, ProfileInput,
};
pub use model::{Profile, Provenance, RecordRef, StoredRow};
