//! The profiles pipeline: Debezium change events in, stored rows, identity graph and
//! merged profiles out, committed with the consumed offsets; and the queries over them.

mod consumer;
mod decode;
mod outbox;
mod state;

pub use consumer::{Applied, ProfilesPipeline};
pub use decode::{RowChange, RowChangeKind};
pub use state::{all_profiles, all_rows, create_profile_tables, profile, profile_by_identifier};
