//! Writing one batch, exactly once: the intent, the files, the offset.
//!
//! 1. The batch's offset range is recorded as the partition's intent (one committed
//!    transaction).
//! 2. The records of exactly that range are read from the log and turned into rows; each
//!    UTC date gets one file, written under a hidden temporary name and fsynced.
//! 3. Each file is renamed to its final name, then each directory is fsynced.
//! 4. One transaction advances the partition's offset past the batch and removes the
//!    intent.
//!
//! A crash before 4 leaves the intent: the next start redoes the batch from step 2. The
//! files are a pure function of the records, so the redo produces the same names with the
//! same contents, and a rename over a file already in place changes nothing a reader sees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use tidewater_core::time::utc_date;
use tidewater_log::{Consumer, LogError, TopicPartition};
use tracing::warn;

use crate::files::{date_dir, ensure_dir, file_name, sync_dir, temp_path};
use crate::schema::{record_batch, schema, Common, Table, TopicKind};
use crate::state::Batch;
use crate::tables::{
    conversations::ConversationRow, feedback::FeedbackRow, kpis::KpiRow, other::OtherRow,
    profiles::ProfileRow,
};
use crate::LakeError;

/// Records asked of the log per read.
const READ_CHUNK: usize = 1_024;
/// Rows handed to the Parquet writer at a time (per file). Fixed, so that page boundaries,
/// and so the bytes of a file, do not depend on how the log returned the records.
const ARROW_BATCH_ROWS: usize = 1_024;
/// A row group is closed once its encoded size reaches this: bounds the memory one open
/// file holds however large its rows are.
const ROW_GROUP_BYTES: usize = 32 * 1024 * 1024;
/// zstd level of every column.
const ZSTD_LEVEL: i32 = 3;
/// Version of the layout and schemas described in `docs/lake-format.md`, stored in every
/// file's key-value metadata.
pub(crate) const FORMAT_VERSION: &str = "1";

/// Where a test makes the writer stop dead, as if the process were killed there.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the intent is committed, before any file is written.
    AfterIntent,
    /// After this many of the batch's files are renamed to their final names (the other
    /// files stay under their temporary names).
    AfterRenames(usize),
    /// After every file is in place and its directory fsynced, before the offset commit.
    BeforeOffsetCommit,
}

/// A file of a batch, written and fsynced under its temporary name.
#[derive(Debug)]
pub(crate) struct StagedFile {
    /// The temporary path it was written to.
    pub temp: PathBuf,
    /// Its final path.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: u64,
}

/// Writes the files of `batch` of `topic`/`partition` (step 2), reading its records
/// through `consumer` (assigned that partition; left positioned after the batch), and
/// returns them, in date order, still under their temporary names.
pub(crate) fn stage_files(
    consumer: &mut dyn Consumer,
    lake: &Path,
    topic: &str,
    partition: u32,
    batch: Batch,
) -> Result<Vec<StagedFile>, LakeError> {
    let mut source = Source {
        consumer,
        lake,
        topic,
        partition,
        batch,
    };
    match TopicKind::of(topic) {
        TopicKind::Conversations => source.stage::<ConversationRow>(),
        TopicKind::Feedback => source.stage::<FeedbackRow>(),
        TopicKind::Kpis => source.stage::<KpiRow>(),
        TopicKind::Profiles => source.stage::<ProfileRow>(),
        TopicKind::Other => source.stage::<OtherRow>(),
    }
}

/// Renames staged files to their final names and fsyncs their directories (step 3).
/// `crash` stops after that many renames, as a test's simulated crash.
pub(crate) fn publish(files: &[StagedFile], crash: Option<CrashPoint>) -> Result<(), LakeError> {
    for (renamed, file) in files.iter().enumerate() {
        if crash == Some(CrashPoint::AfterRenames(renamed)) {
            return Err(LakeError::InjectedCrash);
        }
        fs_err::rename(&file.temp, &file.path)?;
    }
    if crash == Some(CrashPoint::AfterRenames(files.len())) {
        return Err(LakeError::InjectedCrash);
    }
    let mut dirs: Vec<&Path> = files.iter().filter_map(|f| f.path.parent()).collect();
    dirs.dedup();
    for dir in dirs {
        sync_dir(dir)?;
    }
    Ok(())
}

/// How long one read of a batch waits for records the log holds; the embedded log
/// answers at once, a broker after a fetch.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// Reads that may come back empty while the log holds the records, before the batch is
/// declared unreadable.
const FETCH_TRIES: u32 = 20;

/// The records of one batch.
struct Source<'a> {
    consumer: &'a mut dyn Consumer,
    lake: &'a Path,
    topic: &'a str,
    partition: u32,
    batch: Batch,
}

impl Source<'_> {
    fn stage<T: Table>(&mut self) -> Result<Vec<StagedFile>, LakeError> {
        let schema = schema::<T>();
        let mut files: BTreeMap<String, DateFile<T>> = BTreeMap::new();
        let assigned = TopicPartition::new(self.topic, self.partition);
        self.consumer
            .seek(&assigned, self.batch.first)
            .map_err(|source| self.log_error(source))?;
        let mut next = self.batch.first;
        // Empty polls in a row while the log says the records are there (a broker's fetch
        // has not arrived yet).
        let mut waited = 0;
        while next <= self.batch.last {
            let want = (self.batch.last - next + 1).min(READ_CHUNK as u64) as usize;
            let fetched = self
                .consumer
                .poll(want, FETCH_WAIT)
                .map_err(|source| self.log_error(source))?
                .pop()
                .ok_or_else(|| {
                    self.log_error(LogError::UnknownPartition {
                        topic: self.topic.to_owned(),
                        partition: self.partition,
                    })
                })?;
            if let Some((from, to)) = fetched.skipped {
                // Records the lake never wrote are gone (damage; retention keeps what the
                // lake has not committed): nothing can bring them back, so the batch goes
                // on with what remains.
                warn!(
                    topic = self.topic,
                    partition = self.partition,
                    from,
                    to,
                    "records were deleted from the log before the lake wrote them"
                );
            }
            let records = fetched.records;
            if records.first().is_some_and(|r| r.offset > self.batch.last) {
                // The rest of the batch lies in a gap of the partition's offsets.
                break;
            }
            if records.is_empty() && fetched.high_watermark > next && waited < FETCH_TRIES {
                waited += 1;
                continue;
            }
            waited = 0;
            if records.is_empty() {
                return Err(LakeError::MissingRecords {
                    topic: self.topic.to_owned(),
                    partition: self.partition,
                    last: self.batch.last,
                    end: fetched.high_watermark,
                });
            }
            for record in records.iter().take_while(|r| r.offset <= self.batch.last) {
                next = record.offset + 1;
                let common = Common::of(record);
                for (time_ms, row) in T::parse(record) {
                    let date = utc_date(time_ms);
                    let file = match files.entry(date) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let file = self.create_file::<T>(e.key(), &schema)?;
                            e.insert(file)
                        }
                    };
                    file.push(common.clone(), row, self.topic)?;
                }
            }
        }
        files
            .into_values()
            .map(|file| file.finish(self.topic))
            .collect()
    }

    fn create_file<T: Table>(
        &self,
        date: &str,
        schema: &SchemaRef,
    ) -> Result<DateFile<T>, LakeError> {
        let dir = date_dir(self.lake, self.topic, date);
        ensure_dir(&dir)?;
        let path = dir.join(file_name(self.partition, self.batch.first, self.batch.last));
        let temp = temp_path(&path);
        // Truncates what an interrupted earlier attempt left under this name.
        let out = fs_err::File::create(&temp)?;
        let writer =
            ArrowWriter::try_new(out, SchemaRef::clone(schema), Some(properties(self.topic)))
                .map_err(|source| LakeError::Parquet {
                    path: temp.clone(),
                    source,
                })?;
        Ok(DateFile {
            schema: SchemaRef::clone(schema),
            temp,
            path,
            writer,
            common: Vec::with_capacity(ARROW_BATCH_ROWS),
            typed: Vec::with_capacity(ARROW_BATCH_ROWS),
            rows: 0,
        })
    }

    fn log_error(&self, source: LogError) -> LakeError {
        LakeError::Log {
            topic: self.topic.to_owned(),
            source,
        }
    }
}

/// The Parquet settings of every file: zstd, and the format version and topic in the
/// key-value metadata. No time or host goes in, so a file is a function of its rows.
fn properties(topic: &str) -> WriterProperties {
    // Level 3 is valid; the fallback (parquet's default level) only satisfies the type.
    let level = ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(
                "tidewater.lake.format_version".to_owned(),
                FORMAT_VERSION.to_owned(),
            ),
            KeyValue::new("tidewater.lake.topic".to_owned(), topic.to_owned()),
        ]))
        .build()
}

/// One date's file of a batch, being written.
struct DateFile<T> {
    schema: SchemaRef,
    temp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<fs_err::File>,
    /// Rows not yet handed to the writer.
    common: Vec<Common>,
    typed: Vec<T>,
    rows: u64,
}

impl<T: Table> DateFile<T> {
    fn push(&mut self, common: Common, row: T, topic: &str) -> Result<(), LakeError> {
        self.common.push(common);
        self.typed.push(row);
        self.rows += 1;
        if self.typed.len() >= ARROW_BATCH_ROWS {
            self.write_buffered(topic)?;
        }
        Ok(())
    }

    fn write_buffered(&mut self, topic: &str) -> Result<(), LakeError> {
        if self.typed.is_empty() {
            return Ok(());
        }
        let batch = record_batch(&self.schema, &self.common, &self.typed).map_err(|source| {
            LakeError::Arrow {
                topic: topic.to_owned(),
                source,
            }
        })?;
        self.common.clear();
        self.typed.clear();
        self.writer
            .write(&batch)
            .map_err(|source| self.parquet_error(source))?;
        if self.writer.in_progress_size() >= ROW_GROUP_BYTES {
            self.writer
                .flush()
                .map_err(|source| self.parquet_error(source))?;
        }
        Ok(())
    }

    /// Writes the footer and fsyncs the file.
    fn finish(mut self, topic: &str) -> Result<StagedFile, LakeError> {
        self.write_buffered(topic)?;
        let Self {
            temp,
            path,
            writer,
            rows,
            ..
        } = self;
        let file = writer.into_inner().map_err(|source| LakeError::Parquet {
            path: temp.clone(),
            source,
        })?;
        file.sync_all()?;
        Ok(StagedFile { temp, path, rows })
    }

    fn parquet_error(&self, source: parquet::errors::ParquetError) -> LakeError {
        LakeError::Parquet {
            path: self.temp.clone(),
            source,
        }
    }
}
