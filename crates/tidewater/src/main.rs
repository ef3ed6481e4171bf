//! The `tidewater` command: CLI parsing and wiring only.

mod bench;
mod dlq;
mod events;
mod export;
mod import;
mod index;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tidewater_config::Config;
use tidewater_sources::FilesConfig;

/// Tidewater keeps the context of generative-AI applications fresh.
#[derive(Parser)]
#[command(name = "tidewater", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the configured sources, pipelines and the HTTP API.
    Run(RunArgs),
    /// Check a configuration file and print the effective configuration.
    CheckConfig {
        /// The TOML file to check.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Benchmarks: retrieval quality, freshness, embedding speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Send events from NDJSON files to a running Tidewater.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Append the rows of Parquet or JSON Lines files to the documents topic (resumable).
    Import(import::Args),
    /// Upkeep of the vector index (pgvector's IVFFlat after a bulk load).
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Export data from the lake (fine-tuning JSONL).
    #[command(subcommand)]
    Export(export::ExportCommand),
}

/// Options shared by `run` and the commands that start Tidewater.
#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Configuration file (TOML). Without one the embedded defaults serve.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address for the HTTP API (overrides the file).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for the log, state and index (overrides the file).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Folder of documents to index and watch (replaces the file's sources).
    #[arg(long)]
    docs: Option<PathBuf>,
}

impl RunArgs {
    fn load(&self) -> Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        match &self.docs {
            Some(docs) => {
                anyhow::ensure!(
                    docs.is_dir(),
                    "--docs {}: no such directory",
                    docs.display()
                );
                config.sources.files = vec![FilesConfig::new(docs)];
            }
            // The embedded default watches ./docs when it exists.
            None if self.config.is_none()
                && config.sources.files.is_empty()
                && std::path::Path::new("docs").is_dir() =>
            {
                config.sources.files = vec![FilesConfig::new("docs")];
            }
            None => {}
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEWATER_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Run(args) => Ok(tidewater_runtime::run_until_signal(|| args.load())?),
        Command::CheckConfig { config } => {
            let config = Config::load(config.as_deref())?;
            config.validate()?;
            println!("{}", effective_config(&config)?);
            Ok(())
        }
        Command::Bench(cmd) => bench::run(cmd),
        Command::Dlq(cmd) => dlq::run(cmd),
        Command::Import(args) => import::run(args),
        Command::Events(cmd) => events::run(cmd),
        Command::Export(cmd) => export::run(cmd),
        Command::Index(cmd) => index::run(cmd),
    }
}

/// The configuration as JSON, every string with its secrets (URL and DSN passwords, secret
/// parameters) masked: the output is meant to be shared.
fn effective_config(config: &Config) -> Result<String> {
    fn mask(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(text) => {
                *text = tidewater_core::redact::redact(text).into_owned();
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(mask),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(mask),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(config)?;
    mask(&mut value);
    Ok(serde_json::to_string_pretty(&value)?)
}
