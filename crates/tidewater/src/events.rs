//! `tidewater events send`: posts the events of NDJSON files to a running Tidewater's
//! `POST /v1/events/{topic}`, in batches, stopping at the first batch it refuses.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

/// Event commands.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Send the events of NDJSON files (one JSON event a line) to a topic.
    Send {
        /// NDJSON files; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The topic (the `[profiles]` topic takes change events).
        #[arg(long, default_value = "changes")]
        topic: String,
        /// The running Tidewater.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Events per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

/// Runs an event command.
pub fn run(command: EventsCommand) -> Result<()> {
    let EventsCommand::Send {
        files,
        topic,
        url,
        batch,
    } = command;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::new();
    let endpoint = format!("{}/v1/events/{topic}", url.trim_end_matches('/'));
    let mut sent = 0usize;
    for file in files {
        let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?,
            ))
        };
        let mut lines = Vec::with_capacity(batch);
        let mut line_no = 0usize;
        let mut first_line = 1usize;
        let mut flush = |lines: &mut Vec<String>, first: usize| -> Result<()> {
            if lines.is_empty() {
                return Ok(());
            }
            let body = lines.join("\n");
            let response = runtime
                .block_on(
                    client
                        .post(&endpoint)
                        .header("content-type", "application/x-ndjson")
                        .body(body)
                        .send(),
                )
                .with_context(|| format!("cannot reach {endpoint}"))?;
            let status = response.status();
            let text = runtime.block_on(response.text()).unwrap_or_default();
            anyhow::ensure!(
                status.is_success(),
                "{}: lines {first}-{} refused ({status}): {text}",
                file.display(),
                first + lines.len() - 1
            );
            sent += lines.len();
            lines.clear();
            Ok(())
        };
        for line in reader.lines() {
            let line = line.with_context(|| format!("cannot read {}", file.display()))?;
            line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            lines.push(line);
            if lines.len() == batch {
                flush(&mut lines, first_line)?;
                first_line = line_no + 1;
            }
        }
        flush(&mut lines, first_line)?;
    }
    eprintln!("sent {sent} events to {endpoint}");
    Ok(())
}
