//! `tidewater export`: data out of the lake.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use tidewater_config::Config;

/// Export commands. They read the lake's Parquet files, so Tidewater may keep running.
#[derive(Subcommand)]
pub enum ExportCommand {
    /// Write the well-rated conversations as chat-messages JSONL for fine-tuning.
    Finetune {
        /// Lowest rating exported (1–5; a thumbs up counts as 5, a thumbs down as 1).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=5))]
        min_rating: u8,
        /// The JSONL file to write.
        #[arg(long)]
        out: PathBuf,
        /// Configuration file (TOML), for the lake's location.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Tidewater's data directory (overrides the file); the lake is `<data-dir>/lake`
        /// unless `lake.dir` says otherwise.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(command: ExportCommand) -> Result<()> {
    match command {
        ExportCommand::Finetune {
            min_rating,
            out,
            config,
            data_dir,
        } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(dir) = data_dir {
                config.data_dir = dir;
            }
            let lake = config.lake_dir();
            anyhow::ensure!(
                lake.is_dir(),
                "no lake at {}: nothing has been written there yet",
                lake.display()
            );
            // Written next to the target, then renamed: a failed export leaves no half file.
            let partial = out.with_extension("jsonl.partial");
            let file = std::fs::File::create(&partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            let mut writer = std::io::BufWriter::new(file);
            let report = tidewater_lake::export_finetune(&lake, min_rating, &mut writer)
                .with_context(|| format!("cannot export from {}", lake.display()))?;
            writer.flush()?;
            writer.get_ref().sync_all()?;
            std::fs::rename(&partial, &out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!(
                "exported {} of {} conversations (rating >= {min_rating}) to {}",
                report.exported,
                report.conversations,
                out.display()
            );
            Ok(())
        }
    }
}
