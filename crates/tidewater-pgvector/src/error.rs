//! Errors of the pgvector index, classified for the pipeline: who is at fault and whether
//! trying the same call again may succeed.

use postgres::error::SqlState;
use tidewater_core::redact::redact;
use tidewater_core::{ErrorDomain, RetryHint};

/// Why a call on [`crate::PgVectorStore`] failed.
///
/// Messages never carry the connection string's password: the driver's text passes
/// through [`tidewater_core::redact::redact`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgVectorError {
    /// The configuration (or an argument) is invalid; nothing was sent to the server.
    #[error("pgvector index config: {0}")]
    Config(String),
    /// Connecting failed: the server is unreachable, refused the role, or the connection
    /// string is malformed.
    #[error("connecting to PostgreSQL ({dsn}): {}", describe(source))]
    Connect {
        /// The connection string, its password masked.
        dsn: String,
        /// The driver's error.
        #[source]
        source: postgres::Error,
    },
    /// A statement failed; the transaction it belonged to was rolled back.
    #[error("PostgreSQL, {what}: {}", describe(source))]
    Query {
        /// What the statement was for.
        what: &'static str,
        /// The driver's error, with the server's message.
        #[source]
        source: postgres::Error,
    },
    /// The `vector` extension is missing and could not be created.
    #[error(
        "the pgvector extension is not available: install pgvector on the server, or have a \
         superuser run CREATE EXTENSION vector in this database: {}",
        describe(source)
    )]
    Extension {
        /// The server's error.
        #[source]
        source: postgres::Error,
    },
    /// The batch was refused: the partition's stored next offset is not the one the batch
    /// expected, so another member owns (or owned) the partition since. Nothing was
    /// written.
    ///
    /// After a transient error during commit the outcome is unknown; when the retry is
    /// refused with `stored` equal to the batch's `next_offset`, the first try committed.
    #[error(
        "batch for {pipeline}/{topic}/{partition} fenced: the stored next offset is {}, the \
         batch expected {}",
        show_offset(*stored),
        show_offset(*expected)
    )]
    Fenced {
        /// The pipeline.
        pipeline: String,
        /// The log topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The next offset stored for the partition (`None`: no row).
        stored: Option<u64>,
        /// The next offset the batch expected.
        expected: Option<u64>,
    },
    /// The pipeline state was taken over by another member since this one acquired it;
    /// nothing was written.
    #[error(
        "the pipeline state `{store}` was taken over by another member; this member's \
         writes to it are refused"
    )]
    StateTaken {
        /// The state's name.
        store: String,
    },
    /// The tables were created for vectors of another dimension (another embedding model).
    #[error(
        "the index tables {prefix}_* hold vectors of dimension {stored}, this process embeds \
         with dimension {requested}: use another table_prefix for the new model, or drop the \
         old tables"
    )]
    DimensionMismatch {
        /// The table prefix.
        prefix: String,
        /// The dimension the tables were created with.
        stored: usize,
        /// The dimension asked for.
        requested: usize,
    },
    /// The tables hold vectors of another embedding model (of the same dimension).
    #[error(
        "the index tables {prefix}_* hold vectors of the model {stored}, this process embeds \
         with {requested}: use another table_prefix for the new model, or drop the old tables"
    )]
    ModelMismatch {
        /// The table prefix.
        prefix: String,
        /// The model the tables were filled with.
        stored: String,
        /// The model asked for.
        requested: String,
    },
    /// A vector (a chunk's in a batch, or a query's) has the wrong length; nothing was
    /// written or searched.
    #[error("{subject} has a vector of dimension {actual}, the index holds {expected}")]
    VectorDimension {
        /// Whose vector: `chunk "<id>"` or `the query`.
        subject: String,
        /// The index's dimension.
        expected: usize,
        /// The vector's length.
        actual: usize,
    },
    /// The tables were written by a newer Tidewater.
    #[error(
        "the index tables {prefix}_* have schema version {stored}, this build knows up to \
         {supported}: upgrade Tidewater"
    )]
    SchemaVersion {
        /// The table prefix.
        prefix: String,
        /// The version in `{prefix}_meta`.
        stored: i32,
        /// The newest version this build reads.
        supported: i32,
    },
    /// The server returned something this crate does not expect (a negative offset,
    /// metadata that is not a JSON object): the tables were changed by hand or are damaged.
    #[error("PostgreSQL returned {what} that cannot be read: {reason}")]
    Decode {
        /// What was read.
        what: &'static str,
        /// Why it cannot be read.
        reason: String,
    },
}

impl PgVectorError {
    /// Whether the same call may succeed if tried again after a back-off: the connection
    /// was lost, the server is shutting down or starting, or the transaction lost a
    /// serialization conflict or a deadlock. Fencing, model, dimension and configuration errors
    /// are final.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { source, .. }
            | Self::Query { source, .. }
            | Self::Extension { source } => is_transient_driver(source),
            Self::Config(_)
            | Self::Fenced { .. }
            | Self::StateTaken { .. }
            | Self::DimensionMismatch { .. }
            | Self::ModelMismatch { .. }
            | Self::VectorDimension { .. }
            | Self::SchemaVersion { .. }
            | Self::Decode { .. } => false,
        }
    }

    /// [`Self::is_transient`] as the workspace's retry hint.
    pub fn retry_hint(&self) -> RetryHint {
        if self.is_transient() {
            RetryHint::Retry
        } else {
            RetryHint::Fatal
        }
    }

    /// Who is at fault: bad settings or a batch that does not fit the index are
    /// [`ErrorDomain::User`]; the database is [`ErrorDomain::External`]; fencing is
    /// [`ErrorDomain::Internal`] to the pipeline (it lost the partition and must stop
    /// processing it), as is unreadable data.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            Self::Config(_)
            | Self::DimensionMismatch { .. }
            | Self::ModelMismatch { .. }
            | Self::VectorDimension { .. }
            | Self::SchemaVersion { .. }
            | Self::Extension { .. } => ErrorDomain::User,
            Self::Connect { .. } | Self::Query { .. } => ErrorDomain::External,
            Self::Fenced { .. } | Self::StateTaken { .. } | Self::Decode { .. } => {
                ErrorDomain::Internal
            }
        }
    }

    /// The SQLSTATE the server answered with, if it did.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            Self::Connect { source, .. }
            | Self::Query { source, .. }
            | Self::Extension { source } => source.code(),
            _ => None,
        }
    }

    /// Wraps a failed statement; for `map_err`.
    pub(crate) fn query(what: &'static str) -> impl FnOnce(postgres::Error) -> Self {
        move |source| Self::Query { what, source }
    }
}

/// Errors of the connection rather than of the statement, or the server's codes for
/// conditions that pass.
fn is_transient_driver(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        // The server answered: refused the role, the statement, or is starting or full.
        Some(code) => is_transient_code(code),
        // No server answer: an I/O error means the network or the server failed, except
        // those the driver raises for bad input (a password missing from the DSN).
        None => std::error::Error::source(error)
            .and_then(|cause| cause.downcast_ref::<std::io::Error>())
            .is_some_and(|io| {
                !matches!(
                    io.kind(),
                    std::io::ErrorKind::InvalidInput
                        | std::io::ErrorKind::InvalidData
                        | std::io::ErrorKind::Unsupported
                )
            }),
    }
}

fn is_transient_code(code: &SqlState) -> bool {
    // Class 08: connection exceptions.
    code.code().starts_with("08")
        || [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
}

/// The driver's message with its cause (its `Display` alone says only "db error"), any
/// password masked.
pub(crate) fn describe(error: &postgres::Error) -> String {
    let text = match std::error::Error::source(error) {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    };
    redact(&text).into_owned()
}

fn show_offset(offset: Option<u64>) -> String {
    offset.map_or_else(|| "none".to_owned(), |o| o.to_string())
}
