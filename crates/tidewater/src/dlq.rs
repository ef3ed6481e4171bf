//! `tidewater dlq`: list dead letters and replay them into their topic.

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tidewater_engine::DeadLetterRecord;
use tidewater_log::{EmbeddedLog, Log, NewRecord};

/// Dead-letter commands. They open the data directory directly: run them while Tidewater
/// is stopped.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// Print each dead letter (one JSON object a line), without duplicates.
    List {
        /// Tidewater's data directory.
        #[arg(long, default_value = "./tidewater-data")]
        data_dir: PathBuf,
        /// Pipeline whose dead letters to read.
        #[arg(long, default_value = "knowledge")]
        pipeline: String,
    },
    /// Append each dead letter's original event to its topic again (after fixing the cause).
    Replay {
        /// Tidewater's data directory.
        #[arg(long, default_value = "./tidewater-data")]
        data_dir: PathBuf,
        /// Pipeline whose dead letters to replay.
        #[arg(long, default_value = "knowledge")]
        pipeline: String,
    },
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
        DlqCommand::List { data_dir, pipeline } => {
            let log = EmbeddedLog::open(data_dir.join("log"), Default::default())?;
            for letter in read_letters(log.as_ref(), &pipeline)? {
                println!("{}", serde_json::to_string(&letter)?);
            }
            Ok(())
        }
        DlqCommand::Replay { data_dir, pipeline } => {
            let log = EmbeddedLog::open(data_dir.join("log"), Default::default())?;
            let letters = read_letters(log.as_ref(), &pipeline)?;
            let mut replayed = 0;
            for letter in &letters {
                let record = NewRecord {
                    key: letter.key()?,
                    value: letter.value()?,
                    timestamp_ms: letter.timestamp_ms,
                };
                log.append(&letter.topic, vec![record])?;
                replayed += 1;
            }
            eprintln!("replayed {replayed} dead letters");
            Ok(())
        }
    }
}
