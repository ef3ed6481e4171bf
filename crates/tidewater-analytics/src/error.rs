//! Errors of the analytics operator and pipeline.

use tidewater_core::ErrorDomain;

/// Errors of the analytics operator and of the pipeline that runs it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured windows are malformed (user input): what is wrong.
    #[error("{0}")]
    InvalidWindow(String),
    /// An event sent to a conversations or feedback topic does not have that topic's form.
    #[error("invalid {topic} event: {reason}")]
    InvalidEvent {
        /// The topic.
        topic: String,
        /// What is wrong, from the parser.
        reason: String,
    },
    /// An event whose own time the event-time policy does not accept (far in the future).
    #[error("{topic} event refused: {source}")]
    EventTime {
        /// The topic.
        topic: String,
        /// Why its time is not accepted.
        #[source]
        source: tidewater_core::EventTimeError,
    },
    /// The topic is neither the conversations nor the feedback topic.
    #[error("topic '{0}' is not an analytics topic")]
    UnknownTopic(String),
    /// The state database failed.
    #[error("analytics state store: {0}")]
    State(#[from] redb::Error),
    /// The engine's state (offsets, outboxes) failed.
    #[error(transparent)]
    Engine(#[from] tidewater_engine::EngineError),
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] tidewater_log::LogError),
    /// Stored state that cannot be read back.
    #[error("corrupt analytics state: {0}")]
    Corrupt(String),
    /// The pipeline thread could not be started.
    #[error("cannot start the analytics thread: {0}")]
    Spawn(std::io::Error),
}

tidewater_engine::from_redb_errors!(Error, State);

impl Error {
    /// Who is at fault.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::InvalidWindow(_)
            | Self::InvalidEvent { .. }
            | Self::EventTime { .. }
            | Self::UnknownTopic(_) => ErrorDomain::User,
            Self::Log(_) => ErrorDomain::External,
            _ => ErrorDomain::Internal,
        }
    }
}
