//! `tidewater import`: appends the rows of Parquet or JSON Lines files to the documents
//! topic, one document per row, for the knowledge pipeline to chunk, embed and index.
//!
//! The import writes to the log of the configured data directory, as `tidewater dlq`
//! does: with the embedded log Tidewater must be stopped (the log admits one process);
//! with `[log] backend = "kafka"` the import runs beside the members.
//!
//! Files are read a unit at a time (a Parquet row group, or `--batch-rows` lines of JSON
//! Lines), so memory stays bounded by one unit whatever the file's size, and the log takes
//! the burst: each unit is appended, and acknowledged, before the next is read.
//!
//! A killed import resumes where it stopped, without writing a row twice. Progress is kept
//! per file under `data_dir/imports/`. Before a unit is appended, an *intent* records the
//! topics' end offsets; every record carries a header naming its file, unit and row. A
//! resumed import that finds an intent reads what the topics hold past those offsets and
//! appends only the rows missing there.
//!
//! A row without an id or text, or with values of the wrong type, goes to the dead-letter
//! topic `import.dead-letters` with its file, unit and row and the reason (`tidewater dlq
//! list --pipeline import` shows them); the rest goes on. A file that cannot be read (not Parquet, truncated) is reported by name and the
//! other files are imported; the command then exits non-zero.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use indicatif::{ProgressBar, ProgressStyle};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tidewater_config::Config;
use tidewater_core::{DocumentEvent, DocumentFormat, DocumentOp};
use tidewater_engine::DeadLetterRecord;
use tidewater_log::{Header, Log, NewRecord, TopicConfig};
use tidewater_metrics::Metrics;

/// The header naming a record's origin: `<file key>/<unit>/<row>`.
const ORIGIN: &str = "tidewater-import";

/// Options of `tidewater import`.
#[derive(clap::Args)]
pub struct Args {
    /// Files to import (Parquet or JSON Lines).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The files' format; by default from each file's extension (`.parquet`, `.jsonl`,
    /// `.ndjson`, `.json`).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Column (or JSON field) holding the document id.
    #[arg(long, default_value = "id")]
    id_column: String,
    /// Column (or JSON field) holding the document's text.
    #[arg(long, default_value = "text")]
    text_column: String,
    /// Columns (or JSON fields) copied into the document's metadata, comma-separated.
    #[arg(long, value_delimiter = ',')]
    metadata_columns: Vec<String>,
    /// Lines per unit of a JSON Lines file (Parquet files go by row group).
    #[arg(long, default_value_t = 10_000)]
    batch_rows: usize,
    /// Configuration file (TOML) of the Tidewater to import into.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Tidewater's data directory (overrides the file; default `./tidewater-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// No progress bar (only the line per file).
    #[arg(long)]
    quiet: bool,
}

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Apache Parquet, read by row group.
    Parquet,
    /// One JSON object a line.
    Jsonl,
}

impl Format {
    fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "parquet" | "pq" => Some(Self::Parquet),
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

/// What is known about one file's import, kept in `data_dir/imports/<key>.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// The file, as given.
    path: String,
    /// Its size and modification time (ms since the epoch) when the import began: a file
    /// changed since is imported again from its start.
    #[serde(default)]
    size: u64,
    #[serde(default)]
    modified_ms: u64,
    /// Units appended whole.
    units_done: u64,
    /// JSON Lines: the byte offset where the next unit starts.
    next_byte: u64,
    /// Rows appended as documents, and as dead letters.
    documents: u64,
    dead_letters: u64,
    /// Set while a unit is being appended: the topics' ends before it.
    intent: Option<Intent>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Intent {
    unit: u64,
    documents_ends: Vec<u64>,
    dead_letters_ends: Vec<u64>,
}

/// One row's outcome: a document, or why not.
enum Row {
    Document {
        id: String,
        text: String,
        metadata: Map<String, Value>,
    },
    Dead {
        reason: String,
        value: Value,
    },
}

/// A unit read from a file.
struct Unit {
    rows: Vec<Row>,
    /// JSON Lines: where the next unit starts.
    next_byte: u64,
}

/// The columns a row is made of.
struct Columns<'a> {
    id: &'a str,
    text: &'a str,
    metadata: &'a [String],
    /// The largest text one log record holds (with the event's header).
    max_text_bytes: usize,
}

/// Where the import writes.
struct Target {
    log: Arc<dyn Log>,
    documents: String,
    dead_letters: String,
    imports: PathBuf,
}

/// Runs `tidewater import`.
pub fn run(args: Args) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let data_dir = args.data_dir.clone().unwrap_or(config.data_dir.clone());
    let metrics = Arc::new(Metrics::new(&config.health));
    let log = tidewater_log::open_log(&config.log, &data_dir, metrics).with_context(|| {
        format!(
            "cannot open the log of {}: with the embedded log, stop the Tidewater that uses it \
             first",
            data_dir.display()
        )
    })?;
    let target = Target {
        documents: config.knowledge.topic.clone(),
        dead_letters: DeadLetterRecord::topic_for("import"),
        imports: data_dir.join("imports"),
        log,
    };
    target
        .log
        .ensure_topic(&target.documents, &config.knowledge.topic_config)?;
    target.log.ensure_topic(
        &target.dead_letters,
        &TopicConfig {
            partitions: 1,
            ..TopicConfig::default()
        },
    )?;
    std::fs::create_dir_all(&target.imports)
        .with_context(|| format!("cannot create {}", target.imports.display()))?;
    let columns = Columns {
        id: &args.id_column,
        text: &args.text_column,
        metadata: &args.metadata_columns,
        max_text_bytes: config
            .log
            .max_record_bytes
            .saturating_sub(tidewater_core::document::EVENT_HEADER_ROOM),
    };
    let started = Instant::now();
    let (mut documents, mut dead, mut failed) = (0, 0, Vec::new());
    for path in &args.paths {
        let format = match args.format.or_else(|| Format::of(path)) {
            Some(format) => format,
            None => bail!(
                "{}: unknown format; name it with --format parquet|jsonl",
                path.display()
            ),
        };
        match import_file(&target, path, format, &columns, &args) {
            Ok((d, l)) => {
                documents += d;
                dead += l;
            }
            Err(e) => {
                eprintln!("{}: {e:#}", path.display());
                failed.push(path.display().to_string());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported {documents} documents ({dead} rows dead-lettered to {}) from {} files in \
         {seconds:.1} s ({:.0} rows/s)",
        target.dead_letters,
        args.paths.len() - failed.len(),
        (documents + dead) as f64 / seconds.max(1e-9)
    );
    ensure!(failed.is_empty(), "could not import {}", failed.join(", "));
    Ok(())
}

/// Imports one file from where its progress says; returns the documents and dead letters
/// appended by this run.
fn import_file(
    target: &Target,
    path: &Path,
    format: Format,
    columns: &Columns<'_>,
    args: &Args,
) -> Result<(u64, u64)> {
    let canonical = path
        .canonicalize()
        .with_context(|| format!("cannot open {}", path.display()))?;
    let key = &tidewater_core::content_hash(canonical.to_string_lossy().as_bytes())[..16];
    let progress_path = target.imports.join(format!("{key}.json"));
    let meta = std::fs::metadata(&canonical)?;
    let (size, modified_ms) = (
        meta.len(),
        meta.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64),
    );
    let fresh = || Progress {
        path: path.display().to_string(),
        size,
        modified_ms,
        ..Progress::default()
    };
    let mut progress: Progress = match std::fs::read(&progress_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", progress_path.display()))?,
        Err(_) => fresh(),
    };
    if (progress.size, progress.modified_ms) != (size, modified_ms) {
        if progress.units_done > 0 || progress.intent.is_some() {
            eprintln!(
                "{}: changed since it was imported; importing it again from the start",
                path.display()
            );
        }
        progress = fresh();
    }
    let mut source = Source::open(path, format, columns, args.batch_rows)?;
    let bar = progress_bar(args.quiet, path, source.total(), progress.units_done);
    let (mut documents, mut dead) = (0, 0);
    let mut unit = progress.units_done;
    while let Some(read) = source.read(unit, progress.next_byte)? {
        // Rows already appended by a run that stopped inside this unit.
        let present = match &progress.intent {
            Some(intent) if intent.unit == unit => appended_rows(target, intent, key, unit)?,
            _ => HashSet::new(),
        };
        progress.intent = Some(Intent {
            unit,
            documents_ends: ends(target.log.as_ref(), &target.documents)?,
            dead_letters_ends: ends(target.log.as_ref(), &target.dead_letters)?,
        });
        save(&progress_path, &progress)?;
        let (d, l) = append_unit(target, path, key, unit, format, read.rows, &present)?;
        documents += d;
        dead += l;
        unit += 1;
        progress.units_done = unit;
        progress.next_byte = read.next_byte;
        progress.documents += d;
        progress.dead_letters += l;
        progress.intent = None;
        save(&progress_path, &progress)?;
        bar.set_position(source.done(unit));
    }
    bar.finish_and_clear();
    eprintln!(
        "{}: {} documents, {} dead letters in total ({documents} and {dead} this run)",
        path.display(),
        progress.documents,
        progress.dead_letters
    );
    Ok((documents, dead))
}

/// A bar over the file's rows (Parquet) or bytes (JSON Lines), with rate and ETA.
fn progress_bar(quiet: bool, path: &Path, total: u64, done_units: u64) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, ETA {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    if done_units > 0 {
        bar.println(format!(
            "{}: resuming after {done_units} units",
            path.display()
        ));
    }
    bar
}

/// The end offset of each partition of `topic`.
fn ends(log: &dyn Log, topic: &str) -> Result<Vec<u64>> {
    (0..log.partitions(topic)?)
        .map(|p| Ok(log.range(topic, p)?.end))
        .collect()
}

/// The origins (`row` numbers) of the records of `unit` appended past the intent's ends.
fn appended_rows(target: &Target, intent: &Intent, key: &str, unit: u64) -> Result<HashSet<u64>> {
    let prefix = format!("{key}/{unit}/");
    let mut rows = HashSet::new();
    for (topic, ends) in [
        (&target.documents, &intent.documents_ends),
        (&target.dead_letters, &intent.dead_letters_ends),
    ] {
        for (partition, &from) in ends.iter().enumerate() {
            let end = target.log.range(topic, partition as u32)?.end;
            let mut next = from;
            while next < end {
                let records = target.log.read(topic, partition as u32, next, 1_000)?;
                let Some(last) = records.last() else { break };
                next = last.offset + 1;
                for record in &records {
                    let origin = record
                        .headers
                        .iter()
                        .find(|h| h.name == ORIGIN)
                        .and_then(|h| h.value.as_deref())
                        .and_then(|value| std::str::from_utf8(value).ok());
                    if let Some(row) = origin.and_then(|o| o.strip_prefix(&prefix)) {
                        rows.insert(row.parse()?);
                    }
                }
            }
        }
    }
    Ok(rows)
}

/// Appends a unit's documents and dead letters, leaving out the rows in `present`.
fn append_unit(
    target: &Target,
    path: &Path,
    key: &str,
    unit: u64,
    format: Format,
    rows: Vec<Row>,
    present: &HashSet<u64>,
) -> Result<(u64, u64)> {
    let now = tidewater_core::time::now_ms();
    let unit_name = match format {
        Format::Parquet => "row group",
        Format::Jsonl => "batch of lines",
    };
    let (mut documents, mut letters) = (Vec::new(), Vec::new());
    for (n, row) in rows.into_iter().enumerate() {
        let n = n as u64;
        if present.contains(&n) {
            continue;
        }
        let headers = vec![Header::new(ORIGIN, format!("{key}/{unit}/{n}"))];
        match row {
            Row::Document { id, text, metadata } => {
                let event = DocumentEvent {
                    op: DocumentOp::Upsert,
                    content_hash: Some(tidewater_core::content_hash(text.as_bytes())),
                    doc_id: id,
                    source: "import".into(),
                    format: DocumentFormat::Text,
                    metadata,
                    observed_at_ms: now,
                    body: text.into_bytes(),
                };
                documents.push(NewRecord {
                    key: Some(event.doc_id.as_bytes().to_vec()),
                    value: event.encode(),
                    timestamp_ms: now,
                    headers,
                });
            }
            Row::Dead { reason, value } => {
                let file = path.display().to_string();
                let letter = DeadLetterRecord::for_row(
                    "import",
                    &file,
                    unit as u32,
                    n,
                    value.to_string().as_bytes(),
                    format!("{file}, {unit_name} {unit}, row {n}: {reason}"),
                );
                letters.push(NewRecord {
                    key: Some(letter.dedup_key().into_bytes()),
                    value: serde_json::to_vec(&letter)?,
                    timestamp_ms: now,
                    headers,
                });
            }
        }
    }
    let (d, l) = (documents.len() as u64, letters.len() as u64);
    if !letters.is_empty() {
        target.log.append(&target.dead_letters, letters)?;
    }
    for chunk in chunked(documents, 500) {
        target.log.append(&target.documents, chunk)?;
    }
    Ok((d, l))
}

fn chunked(mut records: Vec<NewRecord>, size: usize) -> Vec<Vec<NewRecord>> {
    let mut out = Vec::new();
    while records.len() > size {
        let rest = records.split_off(size);
        out.push(records);
        records = rest;
    }
    if !records.is_empty() {
        out.push(records);
    }
    out
}

/// Writes the progress durably (a new file renamed into place).
fn save(path: &Path, progress: &Progress) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut file = File::create(&tmp)?;
        serde_json::to_writer(&mut file, progress)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A file being read, unit by unit.
enum Source<'a> {
    Parquet {
        path: PathBuf,
        /// The footer, read once.
        metadata: ArrowReaderMetadata,
        row_groups: Vec<u64>,
        projection: Vec<usize>,
        columns: &'a Columns<'a>,
    },
    Jsonl {
        file: BufReader<File>,
        size: u64,
        batch_rows: usize,
        columns: &'a Columns<'a>,
    },
}

impl<'a> Source<'a> {
    fn open(
        path: &Path,
        format: Format,
        columns: &'a Columns<'a>,
        batch_rows: usize,
    ) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        match format {
            Format::Parquet => {
                let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::default())
                    .context("not a readable Parquet file (truncated, or another format)")?;
                let schema = metadata.schema().clone();
                let mut projection = Vec::new();
                for (role, name) in [("id", columns.id), ("text", columns.text)]
                    .into_iter()
                    .chain(columns.metadata.iter().map(|m| ("metadata", m.as_str())))
                {
                    let (index, field) = schema.column_with_name(name).with_context(|| {
                        format!("no column \"{name}\" (the {role} column) in the file")
                    })?;
                    ensure!(
                        supported(field.data_type()),
                        "column \"{name}\" is {}: only strings, integers, floats and booleans \
                         are read",
                        field.data_type()
                    );
                    projection.push(index);
                }
                let row_groups = metadata
                    .metadata()
                    .row_groups()
                    .iter()
                    .map(|rg| rg.num_rows() as u64)
                    .collect();
                Ok(Self::Parquet {
                    path: path.to_owned(),
                    metadata,
                    row_groups,
                    projection,
                    columns,
                })
            }
            Format::Jsonl => Ok(Self::Jsonl {
                size: file.metadata()?.len(),
                file: BufReader::new(file),
                batch_rows: batch_rows.max(1),
                columns,
            }),
        }
    }

    /// What the progress bar counts to: rows, or bytes.
    fn total(&self) -> u64 {
        match self {
            Self::Parquet { row_groups, .. } => row_groups.iter().sum(),
            Self::Jsonl { size, .. } => *size,
        }
    }

    /// The progress bar's position once `units` are done.
    fn done(&mut self, units: u64) -> u64 {
        match self {
            Self::Parquet { row_groups, .. } => row_groups.iter().take(units as usize).sum(),
            Self::Jsonl { file, .. } => file.stream_position().unwrap_or(0),
        }
    }

    /// Unit `unit` (JSON Lines: starting at byte `at`), or `None` past the end.
    fn read(&mut self, unit: u64, at: u64) -> Result<Option<Unit>> {
        match self {
            Self::Parquet {
                path,
                metadata,
                row_groups,
                projection,
                columns,
            } => {
                if unit as usize >= row_groups.len() {
                    return Ok(None);
                }
                let file = File::open(&*path)?;
                let builder =
                    ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata.clone());
                let mask = ProjectionMask::roots(builder.parquet_schema(), projection.clone());
                let reader = builder
                    .with_row_groups(vec![unit as usize])
                    .with_projection(mask)
                    .build()?;
                let mut rows = Vec::new();
                for batch in reader {
                    let batch = batch.with_context(|| format!("row group {unit} is damaged"))?;
                    rows_of_batch(&batch, columns, &mut rows);
                }
                Ok(Some(Unit { rows, next_byte: 0 }))
            }
            Self::Jsonl {
                file,
                batch_rows,
                columns,
                ..
            } => {
                if file.stream_position()? != at {
                    file.seek(SeekFrom::Start(at))?;
                }
                let mut rows = Vec::new();
                let mut line = String::new();
                while rows.len() < *batch_rows {
                    line.clear();
                    if file.read_line(&mut line)? == 0 {
                        break;
                    }
                    if line.trim().is_empty() {
                        continue;
                    }
                    rows.push(match serde_json::from_str::<Value>(&line) {
                        Ok(Value::Object(fields)) => row_of_object(&fields, columns),
                        Ok(other) => Row::Dead {
                            reason: "the line is not a JSON object".into(),
                            value: other,
                        },
                        Err(e) => Row::Dead {
                            reason: format!("the line is not JSON: {e}"),
                            value: Value::String(line.trim_end().to_owned()),
                        },
                    });
                }
                if rows.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Unit {
                    rows,
                    next_byte: file.stream_position()?,
                }))
            }
        }
    }
}

fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
    )
}

/// The JSON value of row `i` of a column of a [`supported`] type (`Null` for a null).
fn cell(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => json!(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => json!(array.as_string::<i64>().value(i)),
        DataType::Utf8View => json!(array.as_string_view().value(i)),
        DataType::Boolean => json!(array.as_boolean().value(i)),
        DataType::Int8 => json!(array.as_primitive::<Int8Type>().value(i)),
        DataType::Int16 => json!(array.as_primitive::<Int16Type>().value(i)),
        DataType::Int32 => json!(array.as_primitive::<Int32Type>().value(i)),
        DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt8 => json!(array.as_primitive::<UInt8Type>().value(i)),
        DataType::UInt16 => json!(array.as_primitive::<UInt16Type>().value(i)),
        DataType::UInt32 => json!(array.as_primitive::<UInt32Type>().value(i)),
        DataType::UInt64 => json!(array.as_primitive::<UInt64Type>().value(i)),
        DataType::Float32 => json!(array.as_primitive::<Float32Type>().value(i)),
        DataType::Float64 => json!(array.as_primitive::<Float64Type>().value(i)),
        _ => Value::Null,
    }
}

fn rows_of_batch(batch: &RecordBatch, columns: &Columns<'_>, rows: &mut Vec<Row>) {
    let column = |name: &str| batch.column_by_name(name).expect("projected column");
    let (ids, texts) = (column(columns.id), column(columns.text));
    for i in 0..batch.num_rows() {
        let mut fields = Map::new();
        fields.insert(columns.id.to_owned(), cell(ids.as_ref(), i));
        fields.insert(columns.text.to_owned(), cell(texts.as_ref(), i));
        for name in columns.metadata {
            fields.insert(name.clone(), cell(column(name).as_ref(), i));
        }
        rows.push(row_of_object(&fields, columns));
    }
}

/// A row from its fields: the id (a string or an integer), the text (a non-empty string)
/// and the metadata columns present.
fn row_of_object(fields: &Map<String, Value>, columns: &Columns<'_>) -> Row {
    let dead = |reason: String| Row::Dead {
        reason,
        value: Value::Object(fields.clone()),
    };
    let id = match fields.get(columns.id) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        None | Some(Value::Null) => return dead(format!("no id (column \"{}\")", columns.id)),
        Some(other) => {
            return dead(format!(
                "the id (column \"{}\") is not a string or an integer: {other}",
                columns.id
            ))
        }
    };
    if id.len() > tidewater_core::document::MAX_ID_BYTES {
        return dead(format!(
            "the id is longer than {} bytes",
            tidewater_core::document::MAX_ID_BYTES
        ));
    }
    let text = match fields.get(columns.text) {
        Some(Value::String(s)) if s.len() > columns.max_text_bytes => {
            return dead(format!(
                "the text is {} bytes, more than one log record holds ({} bytes: \
                 [log] max_record_bytes less the event's header)",
                s.len(),
                columns.max_text_bytes
            ))
        }
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        None | Some(Value::Null) => return dead(format!("no text (column \"{}\")", columns.text)),
        Some(Value::String(_)) => return dead("the text is empty".into()),
        Some(other) => {
            return dead(format!(
                "the text (column \"{}\") is not a string: {other}",
                columns.text
            ))
        }
    };
    let metadata = columns
        .metadata
        .iter()
        .filter_map(|name| {
            fields
                .get(name)
                .filter(|v| !v.is_null())
                .map(|v| (name.clone(), v.clone()))
        })
        .collect();
    Row::Document { id, text, metadata }
}
