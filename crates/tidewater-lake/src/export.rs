//! The fine-tuning export: well-rated conversations from the lake as chat-messages JSONL,
//! one `{"messages": [...]}` object per line.
//!
//! Which rows count, precisely:
//! - A conversation is its first row in `(_partition, _offset)` order that has status
//!   `ok` and a non-empty answer; its other rows (a failed attempt, a repeat) are ignored.
//! - Its rating is its latest feedback: the largest `event_time`, ties going to the larger
//!   `(_partition, _offset)`. Feedback rows whose JSON did not parse are ignored.
//! - It is exported when that rating's value (up = 5, down = 1, stars = n) is at least
//!   `min_rating`; a conversation without feedback is not exported.
//!
//! A line holds the prompt's messages as sent to the model, then the answer as the
//! `assistant` message. A conversation with no prompt (an extractive answer, or an event
//! sent from outside) becomes a `user` message with the question and the answer. Lines
//! are ordered by the conversation's `(event_time, conversation_id)`; the JSON is compact
//! with `role` before `content`, and every line ends with `\n`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

use arrow_array::{
    Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array,
    UInt8Array,
};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::Serialize;
use tidewater_core::{ChatMessage, CONVERSATIONS_TOPIC, FEEDBACK_TOPIC};

use crate::files::list_parquet;
use crate::LakeError;

/// What an export found and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Distinct conversation ids found in the lake (any status).
    pub conversations: u64,
    /// Conversations written to the output.
    pub exported: u64,
}

/// Writes the well-rated conversations found in the lake as chat-messages JSONL (see the
/// module documentation for the exact selection and format).
pub fn export_finetune(
    lake_dir: &Path,
    min_rating: u8,
    out: &mut dyn Write,
) -> Result<ExportReport, LakeError> {
    let mut seen = HashSet::new();
    let mut answered: HashMap<String, Answered> = HashMap::new();
    for_each_batch(
        &lake_dir.join(CONVERSATIONS_TOPIC),
        CONVERSATION_COLUMNS,
        |path, batch| {
            let cols = ConversationColumns::of(path, batch)?;
            for i in 0..batch.num_rows() {
                let Some(id) = value(cols.id, i) else {
                    continue;
                };
                seen.insert(id.to_owned());
                let answer = value(cols.answer, i).unwrap_or_default();
                if value(cols.status, i) != Some("ok") || answer.is_empty() {
                    continue;
                }
                let position = (cols.partition.value(i), cols.offset.value(i));
                if answered.get(id).is_some_and(|a| a.position <= position) {
                    continue;
                }
                answered.insert(
                    id.to_owned(),
                    Answered {
                        position,
                        event_time_ms: time(cols.event_time, i),
                        question: value(cols.question, i).unwrap_or_default().to_owned(),
                        answer: answer.to_owned(),
                        prompt: value(cols.prompt, i).map(str::to_owned),
                    },
                );
            }
            Ok(())
        },
    )?;

    let mut ratings: HashMap<String, Rated> = HashMap::new();
    for_each_batch(
        &lake_dir.join(FEEDBACK_TOPIC),
        FEEDBACK_COLUMNS,
        |path, batch| {
            let cols = FeedbackColumns::of(path, batch)?;
            for i in 0..batch.num_rows() {
                let (Some(id), true) = (value(cols.id, i), cols.rating_value.is_valid(i)) else {
                    continue;
                };
                let event_time_ms = time(cols.event_time, i);
                let order = (event_time_ms, cols.partition.value(i), cols.offset.value(i));
                if ratings.get(id).is_some_and(|r| r.order >= order) {
                    continue;
                }
                ratings.insert(
                    id.to_owned(),
                    Rated {
                        order,
                        value: cols.rating_value.value(i),
                    },
                );
            }
            Ok(())
        },
    )?;

    let mut selected: Vec<(String, Answered)> = answered
        .into_iter()
        .filter(|(id, _)| ratings.get(id).is_some_and(|r| r.value >= min_rating))
        .collect();
    selected.sort_by(|(a_id, a), (b_id, b)| (a.event_time_ms, a_id).cmp(&(b.event_time_ms, b_id)));
    for (_, conversation) in &selected {
        let mut line = serde_json::to_vec(&Line {
            messages: conversation.messages(),
        })?;
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(ExportReport {
        conversations: seen.len() as u64,
        exported: selected.len() as u64,
    })
}

/// One output line.
#[derive(Serialize)]
struct Line {
    messages: Vec<ChatMessage>,
}

/// A conversation's answered row.
struct Answered {
    /// `(_partition, _offset)`: the first wins.
    position: (u32, u64),
    event_time_ms: i64,
    question: String,
    answer: String,
    /// JSON array of messages.
    prompt: Option<String>,
}

impl Answered {
    fn messages(&self) -> Vec<ChatMessage> {
        let prompt: Vec<ChatMessage> = self
            .prompt
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        let mut messages = if prompt.is_empty() {
            vec![ChatMessage::new("user", self.question.as_str())]
        } else {
            prompt
        };
        messages.push(ChatMessage::new("assistant", self.answer.as_str()));
        messages
    }
}

/// A conversation's latest rating.
struct Rated {
    /// `(event_time, _partition, _offset)`: the largest wins.
    order: (i64, u32, u64),
    value: u8,
}

const CONVERSATION_COLUMNS: &[&str] = &[
    "_partition",
    "_offset",
    "conversation_id",
    "event_time",
    "question",
    "answer",
    "status",
    "prompt",
];

const FEEDBACK_COLUMNS: &[&str] = &[
    "_partition",
    "_offset",
    "conversation_id",
    "event_time",
    "rating_value",
];

struct ConversationColumns<'a> {
    partition: &'a UInt32Array,
    offset: &'a UInt64Array,
    id: &'a StringArray,
    event_time: &'a TimestampMillisecondArray,
    question: &'a StringArray,
    answer: &'a StringArray,
    status: &'a StringArray,
    prompt: &'a StringArray,
}

impl<'a> ConversationColumns<'a> {
    fn of(path: &Path, batch: &'a RecordBatch) -> Result<Self, LakeError> {
        Ok(Self {
            partition: column(path, batch, "_partition")?,
            offset: column(path, batch, "_offset")?,
            id: column(path, batch, "conversation_id")?,
            event_time: column(path, batch, "event_time")?,
            question: column(path, batch, "question")?,
            answer: column(path, batch, "answer")?,
            status: column(path, batch, "status")?,
            prompt: column(path, batch, "prompt")?,
        })
    }
}

struct FeedbackColumns<'a> {
    partition: &'a UInt32Array,
    offset: &'a UInt64Array,
    id: &'a StringArray,
    event_time: &'a TimestampMillisecondArray,
    rating_value: &'a UInt8Array,
}

impl<'a> FeedbackColumns<'a> {
    fn of(path: &Path, batch: &'a RecordBatch) -> Result<Self, LakeError> {
        Ok(Self {
            partition: column(path, batch, "_partition")?,
            offset: column(path, batch, "_offset")?,
            id: column(path, batch, "conversation_id")?,
            event_time: column(path, batch, "event_time")?,
            rating_value: column(path, batch, "rating_value")?,
        })
    }
}

/// Reads `columns` of every lake file under `dir`, batch by batch.
fn for_each_batch(
    dir: &Path,
    columns: &[&str],
    mut visit: impl FnMut(&Path, &RecordBatch) -> Result<(), LakeError>,
) -> Result<(), LakeError> {
    for path in list_parquet(dir)? {
        let parquet_error = |source| LakeError::Parquet {
            path: path.clone(),
            source,
        };
        let file = fs_err::File::open(&path)?.into_file();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_error)?;
        let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().copied());
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(parquet_error)?;
        for batch in reader {
            let batch = batch.map_err(|source| LakeError::Parquet {
                path: path.clone(),
                source: source.into(),
            })?;
            visit(&path, &batch)?;
        }
    }
    Ok(())
}

/// A column of the type the lake writes it with.
fn column<'a, A: Array + 'static>(
    path: &Path,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a A, LakeError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| LakeError::Format {
            path: path.to_owned(),
            reason: format!("no column `{name}`"),
        })?;
    column
        .as_any()
        .downcast_ref::<A>()
        .ok_or_else(|| LakeError::Format {
            path: path.to_owned(),
            reason: format!("column `{name}` has type {}", column.data_type()),
        })
}

/// Row `i` of a string column, `None` when null.
fn value(column: &StringArray, i: usize) -> Option<&str> {
    column.is_valid(i).then(|| column.value(i))
}

/// Row `i` of a timestamp column; 0 when null (a lake row whose event parsed always has one).
fn time(column: &TimestampMillisecondArray, i: usize) -> i64 {
    if column.is_valid(i) {
        column.value(i)
    } else {
        0
    }
}
