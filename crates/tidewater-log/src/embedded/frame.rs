//! Byte layout of segment headers and record frames. `docs/log-format.md` is the
//! specification; a change here is a format change and must bump [`FORMAT_VERSION`]
//! (the fixture test in `tests/format_fixture.rs` fails otherwise).
//!
//! All integers are little-endian.
//!
//! Segment header (24 bytes): magic `TWLOGSEG`, format version `u32`, base offset `u64`,
//! CRC-32 `u32` of the 20 bytes before it.
//!
//! Record frame: `len u32` (bytes after the 8-byte prefix), `crc u32` (CRC-32 of the `len`
//! field followed by the body), then the body: `offset u64`, `timestamp_ms i64`,
//! `key_len u32` (`u32::MAX` = no key), key bytes, value bytes (the rest).

/// First bytes of every segment file.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"TWLOGSEG";
/// Version of the segment and frame layout.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 24;
/// `len` + `crc` in front of every frame body.
pub(crate) const FRAME_PREFIX_LEN: usize = 8;
/// `offset` + `timestamp_ms` + `key_len`: the smallest possible body.
pub(crate) const FRAME_FIXED_BODY_LEN: usize = 20;
/// `key_len` value meaning "no key" (distinct from an empty key).
const NO_KEY: u32 = u32::MAX;

/// Encodes a segment header for a segment whose first record has offset `base`.
pub(crate) fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a segment header and returns the base offset it names.
pub(crate) fn decode_segment_header(header: &[u8]) -> Result<u64, String> {
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
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    Ok(read_u64(header, 12))
}

/// Total frame size of a record, prefix included.
pub(crate) fn frame_len(key: Option<&[u8]>, value: &[u8]) -> usize {
    FRAME_PREFIX_LEN + FRAME_FIXED_BODY_LEN + key.map_or(0, <[u8]>::len) + value.len()
}

/// Largest frame the `len` field can describe.
pub(crate) const MAX_FRAME_LEN: usize = FRAME_PREFIX_LEN + u32::MAX as usize;

/// Appends one frame to `buf`. The caller has checked that
/// `frame_len(key, value) <= MAX_FRAME_LEN`, which also keeps the key length below
/// [`NO_KEY`].
pub(crate) fn encode_frame(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    value: &[u8],
) {
    let start = buf.len();
    let body_len = frame_len(key, value) - FRAME_PREFIX_LEN;
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
    buf.extend_from_slice(value);
    let crc = frame_crc(&buf[start..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The body length stated by a frame prefix (at least 4 bytes).
pub(crate) fn frame_body_len(prefix: &[u8]) -> usize {
    read_u32(prefix, 0) as usize
}

/// What a frame holds, without copying key and value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrameView<'a> {
    /// Offset of the record.
    pub(crate) offset: u64,
    /// Event time.
    pub(crate) timestamp_ms: i64,
    /// Key, if any.
    pub(crate) key: Option<&'a [u8]>,
    /// Value.
    pub(crate) value: &'a [u8],
}

/// Checks a whole frame (prefix included) and splits it into its fields.
pub(crate) fn decode_frame(frame: &[u8]) -> Result<FrameView<'_>, &'static str> {
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
    let (key, value) = if key_len == NO_KEY {
        (None, rest)
    } else {
        let key_len = key_len as usize;
        if key_len > rest.len() {
            return Err("key length exceeds the frame");
        }
        let (key, value) = rest.split_at(key_len);
        (Some(key), value)
    };
    Ok(FrameView {
        offset,
        timestamp_ms,
        key,
        value,
    })
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

    #[test]
    fn frame_round_trips_with_and_without_key() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 7, -3, Some(b"k"), b"value");
        encode_frame(&mut buf, 8, 9, None, b"");
        encode_frame(&mut buf, 9, 10, Some(b""), b"v");
        let first_len = frame_len(Some(b"k"), b"value");
        let second_len = frame_len(None, b"");
        let first = decode_frame(&buf[..first_len]).expect("first frame");
        assert_eq!((first.offset, first.timestamp_ms), (7, -3));
        assert_eq!((first.key, first.value), (Some(&b"k"[..]), &b"value"[..]));
        let second = decode_frame(&buf[first_len..first_len + second_len]).expect("second");
        assert_eq!((second.key, second.value), (None, &b""[..]));
        let third = decode_frame(&buf[first_len + second_len..]).expect("third");
        assert_eq!((third.key, third.value), (Some(&b""[..]), &b"v"[..]));
    }

    #[test]
    fn flipped_bit_fails_the_checksum() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, 2, Some(b"key"), b"value");
        for byte in 0..buf.len() {
            if (4..8).contains(&byte) {
                continue;
            }
            let mut damaged = buf.clone();
            damaged[byte] ^= 0x10;
            assert!(
                decode_frame(&damaged).is_err(),
                "flip at byte {byte} not detected"
            );
        }
    }

    #[test]
    fn segment_header_round_trips() {
        let header = encode_segment_header(42);
        assert_eq!(decode_segment_header(&header), Ok(42));
        let mut damaged = header;
        damaged[13] ^= 1;
        assert!(decode_segment_header(&damaged).is_err());
    }
}
