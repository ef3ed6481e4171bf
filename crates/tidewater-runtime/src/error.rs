//! Why a Tidewater could not start or stop. Each variant names what was being done; the
//! cause stays attached as the error's source.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// An error starting, serving or stopping a Tidewater. Causes from other crates are boxed
/// so that every result stays small.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] tidewater_config::ConfigError),
    /// Loading the configuration failed (the caller's own error).
    #[error(transparent)]
    LoadConfig(Box<dyn std::error::Error + Send + Sync>),
    /// The data directory cannot be created.
    #[error("cannot create data directory {}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log cannot be opened.
    #[error("cannot open the log in {}", path.display())]
    Log {
        /// The log directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<tidewater_log::LogError>,
    },
    /// This member cannot join the group that hands out a lease.
    #[error("cannot join the group of the lease '{name}'")]
    Lease {
        /// The lease.
        name: String,
        /// The cause.
        #[source]
        source: Box<tidewater_engine::EngineError>,
    },
    /// The state that one member at a time owns cannot be opened in PostgreSQL.
    #[error("cannot open the shared {name} state")]
    SharedState {
        /// The pipeline.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<tidewater_engine::EngineError>,
    },
    /// The embedding model cannot be loaded.
    #[error("cannot load the embedding model")]
    Embedder(#[source] Box<tidewater_embed::EmbedError>),
    /// The knowledge pipeline failed to open or start.
    #[error(transparent)]
    Knowledge(Box<tidewater_knowledge::KnowledgeError>),
    /// The profiles pipeline failed to open or start.
    #[error(transparent)]
    Profiles(Box<tidewater_profiles::ProfilesError>),
    /// The analytics pipeline failed to open or start.
    #[error(transparent)]
    Analytics(Box<tidewater_analytics::Error>),
    /// The language model client cannot be set up.
    #[error("cannot set up the language model client for {url}")]
    Llm {
        /// The endpoint, its secrets masked.
        url: String,
        /// The cause.
        #[source]
        source: Box<tidewater_answer::LlmError>,
    },
    /// The lake cannot be opened or started.
    #[error("cannot open the lake in {}", path.display())]
    Lake {
        /// The lake directory.
        path: PathBuf,
        /// The cause (boxed: it is large).
        #[source]
        source: Box<tidewater_lake::LakeError>,
    },
    /// A file source cannot be started.
    #[error("cannot start the file source '{name}' on {}", root.display())]
    FileSource {
        /// The source's name.
        name: String,
        /// Its root folder.
        root: PathBuf,
        /// The cause.
        #[source]
        source: Box<tidewater_sources::SourceError>,
    },
    /// A PostgreSQL source cannot be started.
    #[error("cannot start the PostgreSQL source with slot '{slot}'")]
    Postgres {
        /// The replication slot.
        slot: String,
        /// The cause.
        #[source]
        source: Box<tidewater_cdc::postgres::PostgresError>,
    },
    /// The HTTP API cannot listen.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Serving the HTTP API failed.
    #[error("serving the API failed")]
    Serve(#[source] std::io::Error),
    /// A thread, a signal handler or the async runtime could not be set up.
    #[error("cannot start {what}")]
    Setup {
        /// What was being started.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Sources and pipelines did not stop within the drain time.
    #[error(
        "shutdown did not finish within {} ([server] drain_timeout); still busy: {busy}; \
         exiting anyway",
        humantime::format_duration(*drain_timeout)
    )]
    ShutdownTimeout {
        /// The time they had.
        drain_timeout: Duration,
        /// The components not idle, comma-separated.
        busy: String,
    },
}

/// The pipelines' errors are large; they are boxed so every result stays small.
macro_rules! boxed_from {
    ($($variant:ident: $source:ty),*) => {$(
        impl From<$source> for RuntimeError {
            fn from(e: $source) -> Self {
                Self::$variant(Box::new(e))
            }
        }
    )*};
}

boxed_from!(
    Knowledge: tidewater_knowledge::KnowledgeError,
    Profiles: tidewater_profiles::ProfilesError,
    Analytics: tidewater_analytics::Error
);

impl RuntimeError {
    /// A setup failure of `what`.
    pub(crate) fn setup(what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Setup { what, source }
    }
}
