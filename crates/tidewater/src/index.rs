//! `tidewater index`: upkeep of the vector index.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Subcommand;
use tidewater_config::Config;
use tidewater_pgvector::{IndexMethod, PgVectorStore};

/// Index commands.
#[derive(Subcommand)]
pub enum IndexCommand {
    /// Rebuild pgvector's IVFFlat index with lists sized to the rows now present. IVFFlat
    /// learns its lists' centres from the rows there when it is built, so build it again
    /// after a bulk load and when the data has grown much. Members may keep running:
    /// searches use the old index until the new one is in place.
    Rebuild {
        /// Configuration file (TOML) naming the pgvector index.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Runs an index command.
pub fn run(command: IndexCommand) -> Result<()> {
    match command {
        IndexCommand::Rebuild { config } => rebuild(Config::load(config.as_deref())?),
    }
}

fn rebuild(config: Config) -> Result<()> {
    let Some(pgvector) = config.knowledge.index.pgvector()? else {
        bail!(
            "the built-in index needs no rebuilding; `tidewater index rebuild` is for \
             [knowledge.index] backend = \"pgvector\" with method = \"ivfflat\""
        );
    };
    if pgvector.method != IndexMethod::Ivfflat {
        bail!("pgvector's HNSW index needs no rebuilding; only method = \"ivfflat\" does");
    }
    // The tables record the model and dimension they were made for; open them as such.
    let embedder = tidewater_embed::build_embedder(&config.embedding)?;
    let store = PgVectorStore::open(pgvector, embedder.model_id(), embedder.dimension())?;
    let started = Instant::now();
    store.rebuild_index()?;
    println!(
        "rebuilt the IVFFlat index of {}_chunks ({} chunks) in {:.1} s",
        pgvector.table_prefix,
        store.len()?,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
