//! Document events: what file sources and the document API put on the `documents` topic.
//!
//! Wire format (one log record value): the 4 magic bytes `TWD1`, a little-endian `u32`
//! header length, a JSON header, then the raw body bytes. The body is kept raw so that a
//! file that is not valid UTF-8 still reaches the pipeline, which dead-letters it with a
//! reason instead of the source silently dropping it.

use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 4] = b"TWD1";

/// The longest document id, in bytes, that Tidewater accepts from any source: the API
/// refuses a longer id, a file source dead-letters a file whose id (its path relative to
/// the root) is longer, and the knowledge pipeline dead-letters an event that carries one.
/// A relative path in a watched root can be as long as Linux's `PATH_MAX`.
pub const MAX_ID_BYTES: usize = 4096;

/// Bytes a document event needs besides its content (the header: id up to
/// [`MAX_ID_BYTES`], source, hash, metadata of a file). A source sends no content larger
/// than the log's record limit minus this, so every event fits one record.
pub const EVENT_HEADER_ROOM: usize = MAX_ID_BYTES + 4096;

/// What happened to a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentOp {
    /// Created or changed: the body is the full new content.
    Upsert,
    /// Removed: all of its chunks leave the index.
    Delete,
    /// The source found something it cannot turn into a document: a file whose name is not
    /// valid UTF-8 (the id then spells each invalid byte as `\xNN`) or whose id is longer
    /// than [`MAX_ID_BYTES`]. The body is the reason, as UTF-8 text. The pipeline
    /// dead-letters the event with that reason and leaves the index as it is.
    Reject,
}

/// How the body is to be turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DocumentFormat {
    /// Plain text.
    #[default]
    Text,
    /// Markdown, indexed as written.
    Markdown,
    /// HTML: text is extracted, markup dropped.
    Html,
}

impl DocumentFormat {
    /// The format a file name implies, if Tidewater reads that kind of file.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(Self::Text),
            "md" | "markdown" => Some(Self::Markdown),
            "html" | "htm" => Some(Self::Html),
            _ => None,
        }
    }
}

/// One change to one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentEvent {
    /// Create/update or delete.
    pub op: DocumentOp,
    /// Stable document id (a file's path relative to its root, or the API's id).
    pub doc_id: String,
    /// Which source produced it: `api`, or `files:<root name>`.
    pub source: String,
    /// How to read the body.
    #[serde(default)]
    pub format: DocumentFormat,
    /// User metadata, filterable in search.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// blake3 of the body, hex; lets the pipeline skip a change that changed nothing.
    #[serde(default)]
    pub content_hash: Option<String>,
    /// When the source observed the change (ms since epoch): the start of the freshness clock.
    pub observed_at_ms: i64,
    /// The raw content (empty for deletes; the reason, for rejections).
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// Why a record could not be read as a document event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The value does not start with the document magic or is truncated.
    #[error("not a document event: {0}")]
    Framing(&'static str),
    /// The JSON header is malformed.
    #[error("document event header is not valid JSON: {0}")]
    Header(#[from] serde_json::Error),
}

impl DocumentEvent {
    /// Encodes the event as one log record value.
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(self).expect("document header serialises");
        let mut out = Vec::with_capacity(8 + header.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out
    }

    /// Decodes a log record value written by [`DocumentEvent::encode`].
    pub fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        if value.len() < 8 || &value[..4] != MAGIC {
            return Err(DecodeError::Framing("missing TWD1 magic"));
        }
        let len = u32::from_le_bytes([value[4], value[5], value[6], value[7]]) as usize;
        let header = value
            .get(8..8 + len)
            .ok_or(DecodeError::Framing("header longer than record"))?;
        let mut event: DocumentEvent = serde_json::from_slice(header)?;
        event.body = value[8 + len..].to_vec();
        Ok(event)
    }
}

/// The content hash used across Tidewater (blake3, lowercase hex).
pub fn content_hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_bodies() {
        let event = DocumentEvent {
            op: DocumentOp::Upsert,
            doc_id: "a/b.md".into(),
            source: "files:docs".into(),
            format: DocumentFormat::Markdown,
            metadata: serde_json::Map::new(),
            content_hash: Some(content_hash(b"\xff\x00x")),
            observed_at_ms: 42,
            body: b"\xff\x00x".to_vec(),
        };
        assert_eq!(DocumentEvent::decode(&event.encode()).unwrap(), event);
    }

    #[test]
    fn rejects_foreign_values() {
        assert!(DocumentEvent::decode(b"{\"op\":\"upsert\"}").is_err());
        let mut bad = b"TWD1".to_vec();
        bad.extend_from_slice(&100u32.to_le_bytes());
        assert!(DocumentEvent::decode(&bad).is_err());
    }
}
