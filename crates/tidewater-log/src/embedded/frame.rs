//! Byte layout of segment headers and record frames. `docs/log-format.md` is the
//! specification; a change here is a format change and must bump [`FORMAT_VERSION`]
//! (the fixture test in `tests/format_fixture.rs` fails otherwise).
//!
//! All integers are little-endian.
//!
//! Segment header (24 bytes): magic `TWLOGSEG`, format version `u32`, base offset `u64`,
//! CRC-32 `u32` of the 20 bytes before it. The version says how the segment's frames are
//! laid out; a log reads segments of every version it knows and writes the newest.
//!
//! Record frame: `len u32` (bytes after the 8-byte prefix), `crc u32` (CRC-32 of the `len`
//! field followed by the body), then the body: `offset u64`, `timestamp_ms i64`,
//! `key_len u32` (`u32::MAX` = no key), key bytes, then — from version 2 on —
//! `headers_len u32` and the headers block, then the value bytes (the rest).
//!
//! Headers block (empty when a record has none): `count u32`, then per header
//! `name_len u16`, name (UTF-8), `value_len u32` (`u32::MAX` = null value), value bytes.

use crate::Header;

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"TWLOGSEG";
/// Version of the segment and frame layout written today (1: no headers).
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Size of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 24;
/// `len` + `crc` in front of every frame body.
pub(crate) const FRAME_PREFIX_LEN: usize = 8;
/// `offset` + `timestamp_ms` + `key_len`: the smallest body of a version 1 frame (a
/// version 2 body also has `headers_len`).
pub(crate) const FRAME_FIXED_BODY_LEN: usize = 20;
/// `key_len` value meaning "no key" (distinct from an empty key).
const NO_KEY: u32 = u32::MAX;
/// `value_len` of a header meaning "null value" (distinct from an empty one).
const NULL_VALUE: u32 = u32::MAX;

/// Encodes a segment header (of the current version) for a segment whose first record
/// has offset `base`.
pub(crate) fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a segment header and returns the base offset it names and its version.
pub(crate) fn decode_segment_header(header: &[u8]) -> Result<(u64, u32), String> {
    if header.len() < SEGMENT_HEADER_LEN as usize {
        return Err("segment header is incomplete".into());
    }
    if header[0..8] != SEGMENT_MAGIC {
        return Err("not a segment file (bad magic)".into());
    }
    let crc = read_u32(header, 20);
    if crc != crc32fast::hash(&header[0..20]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = read_u32(header, 8);
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(format!("unsupported segment format version {version}"));
    }
    Ok((read_u64(header, 12), version))
}

/// Bytes of the headers block of `headers`.
fn headers_block_len(headers: &[Header]) -> usize {
    if headers.is_empty() {
        return 0;
    }
    4 + headers
        .iter()
        .map(|h| 2 + h.name.len() + 4 + h.value.as_ref().map_or(0, Vec::len))
        .sum::<usize>()
}

/// Total frame size of a record in the current format, prefix included.
pub(crate) fn frame_len(key: Option<&[u8]>, headers: &[Header], value: &[u8]) -> usize {
    FRAME_PREFIX_LEN
        + FRAME_FIXED_BODY_LEN
        + key.map_or(0, <[u8]>::len)
        + 4
        + headers_block_len(headers)
        + value.len()
}

/// Largest frame the `len` field can describe.
pub(crate) const MAX_FRAME_LEN: usize = FRAME_PREFIX_LEN + u32::MAX as usize;

/// Why a record's headers cannot be stored.
pub(crate) fn check_headers(headers: &[Header]) -> Result<(), String> {
    for header in headers {
        if header.name.len() > usize::from(u16::MAX) {
            return Err(format!(
                "header name of {} bytes exceeds {}",
                header.name.len(),
                u16::MAX
            ));
        }
    }
    Ok(())
}

/// Appends one frame (current format) to `buf`. The caller has checked that the frame
/// fits [`MAX_FRAME_LEN`] (which keeps every length below its "none" value) and that the
/// headers pass [`check_headers`].
pub(crate) fn encode_frame(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    headers: &[Header],
    value: &[u8],
) {
    let start = buf.len();
    let body_len = frame_len(key, headers, value) - FRAME_PREFIX_LEN;
    // Truncation cannot happen: the caller bounded the frame by MAX_FRAME_LEN.
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    match key {
        Some(key) => {
            buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
            buf.extend_from_slice(key);
        }
        None => buf.extend_from_slice(&NO_KEY.to_le_bytes()),
    }
    buf.extend_from_slice(&(headers_block_len(headers) as u32).to_le_bytes());
    if !headers.is_empty() {
        buf.extend_from_slice(&(headers.len() as u32).to_le_bytes());
        for header in headers {
            buf.extend_from_slice(&(header.name.len() as u16).to_le_bytes());
            buf.extend_from_slice(header.name.as_bytes());
            match &header.value {
                Some(value) => {
                    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    buf.extend_from_slice(value);
                }
                None => buf.extend_from_slice(&NULL_VALUE.to_le_bytes()),
            }
        }
    }
    buf.extend_from_slice(value);
    let crc = frame_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The body length stated by a frame prefix (at least 4 bytes).
pub(crate) fn frame_body_len(prefix: &[u8]) -> usize {
    read_u32(prefix, 0) as usize
}

/// What a frame holds, without copying key, headers and value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameView<'a> {
    /// Offset of the record.
    pub(crate) offset: u64,
    /// Event time.
    pub(crate) timestamp_ms: i64,
    /// Key, if any.
    pub(crate) key: Option<&'a [u8]>,
    /// The encoded headers block (empty: no headers), checked by [`decode_frame`].
    pub(crate) headers: &'a [u8],
    /// Value.
    pub(crate) value: &'a [u8],
}

impl FrameView<'_> {
    /// The record's headers.
    pub(crate) fn headers(&self) -> Vec<Header> {
        parse_headers(self.headers).unwrap_or_default()
    }
}

/// Checks a whole frame (prefix included) of a segment of `version` and splits it into
/// its fields.
pub(crate) fn decode_frame(frame: &[u8], version: u32) -> Result<FrameView<'_>, &'static str> {
    if frame.len() < FRAME_PREFIX_LEN + FRAME_FIXED_BODY_LEN {
        return Err("frame shorter than its fixed fields");
    }
    if frame_body_len(frame) != frame.len() - FRAME_PREFIX_LEN {
        return Err("frame length field does not match");
    }
    if read_u32(frame, 4) != frame_crc(frame) {
        return Err("record checksum mismatch");
    }
    let offset = read_u64(frame, 8);
    let timestamp_ms = read_u64(frame, 16) as i64;
    let key_len = read_u32(frame, 24);
    let rest = &frame[FRAME_PREFIX_LEN + FRAME_FIXED_BODY_LEN..];
    let (key, rest) = if key_len == NO_KEY {
        (None, rest)
    } else {
        let key_len = key_len as usize;
        if key_len > rest.len() {
            return Err("key length exceeds the frame");
        }
        let (key, rest) = rest.split_at(key_len);
        (Some(key), rest)
    };
    let (headers, value) = if version >= 2 {
        if rest.len() < 4 {
            return Err("frame too short for its headers length");
        }
        let headers_len = read_u32(rest, 0) as usize;
        let rest = &rest[4..];
        if headers_len > rest.len() {
            return Err("headers length exceeds the frame");
        }
        let (headers, value) = rest.split_at(headers_len);
        parse_headers(headers)?;
        (headers, value)
    } else {
        (&rest[..0], rest)
    };
    Ok(FrameView {
        offset,
        timestamp_ms,
        key,
        headers,
        value,
    })
}

/// Decodes a headers block.
fn parse_headers(mut block: &[u8]) -> Result<Vec<Header>, &'static str> {
    if block.is_empty() {
        return Ok(Vec::new());
    }
    let take = |block: &mut &[u8], n: usize| -> Result<Vec<u8>, &'static str> {
        if block.len() < n {
            return Err("headers block is truncated");
        }
        let (head, tail) = block.split_at(n);
        *block = tail;
        Ok(head.to_vec())
    };
    let count = read_u32(&take(&mut block, 4)?, 0);
    let mut headers = Vec::new();
    for _ in 0..count {
        let name_len = take(&mut block, 2)?;
        let name_len = usize::from(u16::from_le_bytes([name_len[0], name_len[1]]));
        let name = String::from_utf8(take(&mut block, name_len)?)
            .map_err(|_| "header name is not UTF-8")?;
        let value_len = read_u32(&take(&mut block, 4)?, 0);
        let value = if value_len == NULL_VALUE {
            None
        } else {
            Some(take(&mut block, value_len as usize)?)
        };
        headers.push(Header { name, value });
    }
    if !block.is_empty() {
        return Err("headers block has trailing bytes");
    }
    Ok(headers)
}

/// CRC-32 of the `len` field and the body: everything but the `crc` field itself.
fn frame_crc(frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&frame[0..4]);
    hasher.update(&frame[FRAME_PREFIX_LEN..]);
    hasher.finalize()
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<Header> {
        vec![
            Header::new("trace", b"abc".to_vec()),
            Header {
                name: "empty".into(),
                value: Some(Vec::new()),
            },
            Header {
                name: "null".into(),
                value: None,
            },
            Header::new("trace", b"again".to_vec()),
        ]
    }

    #[test]
    fn headers_round_trip_in_order_with_null_and_duplicates() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 3, 4, None, &headers(), b"value");
        assert_eq!(buf.len(), frame_len(None, &headers(), b"value"));
        let view = decode_frame(&buf, FORMAT_VERSION).expect("frame");
        assert_eq!(view.headers(), headers());
        assert_eq!(view.value, b"value");
    }

    #[test]
    fn version_1_frames_have_no_headers() {
        // A version 1 frame: no headers length between key and value.
        let body: Vec<u8> = [
            &5u64.to_le_bytes()[..],
            &6i64.to_le_bytes(),
            &1u32.to_le_bytes(),
            b"k",
            b"old value",
        ]
        .concat();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&body);
        let crc = frame_crc(&frame);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        let view = decode_frame(&frame, 1).expect("version 1 frame");
        assert_eq!((view.key, view.value), (Some(&b"k"[..]), &b"old value"[..]));
        assert!(view.headers().is_empty());
    }

    #[test]
    fn frame_round_trips_with_and_without_key() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, -3, Some(b"k"), &[], b"value");
        encode_frame(&mut buf, 8, 9, None, &[], b"");
        encode_frame(&mut buf, 9, 10, Some(b""), &[], b"v");
        let first_len = frame_len(Some(b"k"), &[], b"value");
        let second_len = frame_len(None, &[], b"");
        let first = decode_frame(&buf[..first_len], FORMAT_VERSION).expect("first frame");
        assert_eq!((first.offset, first.timestamp_ms), (7, -3));
        assert_eq!((first.key, first.value), (Some(&b"k"[..]), &b"value"[..]));
        let second =
            decode_frame(&buf[first_len..first_len + second_len], FORMAT_VERSION).expect("second");
        assert_eq!((second.key, second.value), (None, &b""[..]));
        let third = decode_frame(&buf[first_len + second_len..], FORMAT_VERSION).expect("third");
        assert_eq!((third.key, third.value), (Some(&b""[..]), &b"v"[..]));
    }

    #[test]
    fn flipped_bit_fails_the_checksum() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 2, Some(b"key"), &headers(), b"value");
        for byte in 0..buf.len() {
            if (4..8).contains(&byte) {
                continue;
            }
            let mut damaged = buf.clone();
            damaged[byte] ^= 0x10;
            assert!(
                decode_frame(&damaged, FORMAT_VERSION).is_err(),
                "flip at byte {byte} not detected"
            );
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let header = encode_segment_header(42);
        assert_eq!(decode_segment_header(&header), Ok((42, FORMAT_VERSION)));
        let mut damaged = header;
        damaged[13] ^= 1;
        assert!(decode_segment_header(&damaged).is_err());
    }
}
