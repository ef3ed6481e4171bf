//! The stream engine. A [`Pipeline`] consumes one topic; the [`Engine`] runs one worker
//! thread per partition that reads a batch, lets the pipeline do its heavy work outside
//! any transaction ([`Pipeline::prepare`]), then applies the result and the partition's
//! next offset in one redb write transaction ([`Pipeline::apply`]). A crash at any instant
//! therefore either keeps both the effect and the offset or neither: no effect is lost or
//! repeated. Events the pipeline rejects go to a dead-letter topic with their reason, and
//! output for other topics leaves through an [`Outbox`], published exactly once.
#![warn(missing_docs)]

mod config;
mod dead_letter;
mod engine;
mod error;
mod lease;
mod outbox;
mod ownership;
mod pipeline;
mod positions;
mod sink;
mod state;
mod target;

pub use config::EngineConfig;
pub use dead_letter::{DeadLetter, DeadLetterRecord};
pub use engine::{Engine, EngineHandle, ProgressWatcher, Replica, SinkEngine};
pub use error::{EngineError, PipelineError};
pub use lease::{Lease, LeaseGuard, Lock};
pub use outbox::{Handover, Outbox, OutboxEntry};
pub use ownership::{Ownership, SharedState, Stopper};
pub use pipeline::{Pipeline, Prepared};
pub use positions::LogPositions;
pub use sink::{Sink, SinkPosition};
pub use state::{
    committed_offset, committed_offsets, empty_state_image, open_state_db, open_state_db_on,
    state_db_from_image, OFFSETS,
};
