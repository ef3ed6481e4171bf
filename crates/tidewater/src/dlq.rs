//! `tidewater dlq`: list dead letters and replay them into their topic.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use tidewater_config::Config;
use tidewater_engine::DeadLetterRecord;
use tidewater_log::{EmbeddedLog, Log, NewRecord};

/// Dead-letter commands. They open the data directory directly: run them while Tidewater
/// is stopped.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print each dead letter (one JSON object a line), without duplicates.
    List {
        /// Where Tidewater keeps its data.
        #[command(flatten)]
        store: Store,
        /// Pipeline whose dead letters to read.
        #[arg(long, default_value = "knowledge")]
        pipeline: String,
    },
    /// Append each dead letter's original event to its topic again (after fixing the cause).
    Replay {
        /// Where Tidewater keeps its data.
        #[command(flatten)]
        store: Store,
        /// Pipeline whose dead letters to replay.
        #[arg(long, default_value = "knowledge")]
        pipeline: String,
    },
}

/// The data directory and log settings: from `--config` (as `tidewater run` reads them),
/// with `--data-dir` overriding the file's.
#[derive(clap::Args)]
pub struct Store {
    /// Configuration file (TOML) of the Tidewater whose data to use.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tidewater's data directory (overrides the file; default `./tidewater-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

impl Store {
    /// Opens the log of the configured data directory.
    fn open_log(&self) -> Result<Arc<EmbeddedLog>> {
        let config = Config::load(self.config.as_deref())?;
        let data_dir = self.data_dir.clone().unwrap_or(config.data_dir);
        let dir = data_dir.join("log");
        anyhow::ensure!(
            dir.is_dir(),
            "no log in {}: is this Tidewater's data directory?",
            data_dir.display()
        );
        EmbeddedLog::open(&dir, config.log.embedded())
            .with_context(|| format!("cannot open the log in {}", dir.display()))
    }
}

fn read_letters(log: &dyn Log, pipeline: &str) -> Result<Vec<DeadLetterRecord>> {
    let topic = DeadLetterRecord::topic_for(pipeline);
    anyhow::ensure!(
        log.topics()?.contains(&topic),
        "no dead-letter topic '{topic}': pipeline '{pipeline}' never ran here"
    );
    let mut seen = HashSet::new();
    let mut letters = Vec::new();
    for partition in 0..log.partitions(&topic)? {
        let mut next = log.range(&topic, partition)?.start;
        loop {
            let records = log.read(&topic, partition, next, 1000)?;
            let Some(last) = records.last() else { break };
            next = last.offset + 1;
            for record in records {
                let letter: DeadLetterRecord =
                    serde_json::from_slice(&record.value).with_context(|| {
                        format!(
                            "dead letter at {topic}/{partition}/{} is not JSON",
                            record.offset
                        )
                    })?;
                // The original event's position identifies a dead letter: list each once.
                if seen.insert(letter.dedup_key()) {
                    letters.push(letter);
                }
            }
        }
    }
    Ok(letters)
}

/// Runs a dead-letter command.
pub fn run(command: DlqCommand) -> Result<()> {
    match command {
        DlqCommand::List { store, pipeline } => {
            let log = store.open_log()?;
            for letter in read_letters(log.as_ref(), &pipeline)? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        DlqCommand::Replay { store, pipeline } => {
            anyhow::ensure!(
                pipeline != "import",
                "dead letters of an import are rows of files, not events of a topic: fix the \
                 rows and import the file again"
            );
            let log = store.open_log()?;
            let letters = read_letters(log.as_ref(), &pipeline)?;
            let mut replayed = 0;
            for letter in &letters {
                let record = NewRecord {
                    key: letter.key()?,
                    value: letter.value()?,
                    timestamp_ms: letter.timestamp_ms,
                    headers: letter.headers()?,
                };
                log.append(&letter.topic, vec![record])?;
                replayed += 1;
            }
            eprintln!("replayed {replayed} dead letters");
            Ok(())
        }
    }
}
