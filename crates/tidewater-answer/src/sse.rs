//! Server-sent events: the `text/event-stream` body of a streamed completion turned into
//! the data of its events, however the network splits it into reads.

/// Decodes an event stream incrementally.
///
/// Follows the event-stream format for what chat-completion servers send: lines end in
/// `\n` or `\r\n`; `data:` lines accumulate (joined by `\n`) until a blank line ends the
/// event; comments (`: keep-alive`) and other fields (`event:`, `id:`, `retry:`) are
/// ignored. Lines are decoded only once complete, so a character split between two reads
/// arrives whole.
///
/// An event is held until its blank line: one whose line or data grows past `max_bytes`
/// is refused ([`TooLarge`]) instead of buffered, so a server that never ends a line
/// cannot exhaust memory.
#[derive(Debug)]
pub(crate) struct SseDecoder {
    /// The bytes of the line being read.
    line: Vec<u8>,
    /// The data of the event being read; `None` until it has a `data:` line.
    data: Option<String>,
    /// The most bytes one line, or the data of one event, may hold.
    max_bytes: usize,
}

/// A line or an event of the stream is longer than the decoder's limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLarge;

impl SseDecoder {
    /// A decoder refusing lines and events over `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            data: None,
            max_bytes,
        }
    }

    /// Takes the next bytes of the body and returns the data of each event they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, TooLarge> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.extend_line(&rest[..newline])?;
            rest = &rest[newline + 1..];
            let line = std::mem::take(&mut self.line);
            events.extend(self.end_line(&line)?);
        }
        self.extend_line(rest)?;
        Ok(events)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        if self.line.len() + bytes.len() > self.max_bytes {
            return Err(TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    /// At the end of the body: the data of an event the body left unterminated, if any.
    pub(crate) fn finish(&mut self) -> Result<Option<String>, TooLarge> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.end_line(&line)?;
        }
        Ok(self.data.take())
    }

    /// Handles one complete line; returns the event's data when the line ends an event.
    fn end_line(&mut self, line: &[u8]) -> Result<Option<String>, TooLarge> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(self.data.take());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        // A comment has an empty field name; other fields carry nothing a completion needs.
        if field == b"data" {
            let value = String::from_utf8_lossy(value);
            let held = self.data.as_ref().map_or(0, |data| data.len() + 1);
            if held + value.len() > self.max_bytes {
                return Err(TooLarge);
            }
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = ": keep-alive\n\n\
        data: {\"a\":\"é🌊\"}\n\n\
        event: message\r\nid: 7\r\nretry: 1000\r\ndata: {\"b\":1}\r\n\r\n\
        data: first\ndata:second\n\n\
        data\n\n\
        data: [DONE]\n\n";

    const EVENTS: [&str; 5] = [
        "{\"a\":\"é🌊\"}",
        "{\"b\":1}",
        "first\nsecond",
        "",
        "[DONE]",
    ];

    fn decode(pieces: &[&[u8]]) -> Vec<String> {
        let mut decoder = SseDecoder::new(1 << 20);
        let mut events: Vec<String> = pieces
            .iter()
            .flat_map(|p| decoder.push(p).unwrap())
            .collect();
        events.extend(decoder.finish().unwrap());
        events
    }

    #[test]
    fn events_are_read_whole() {
        assert_eq!(decode(&[BODY.as_bytes()]), EVENTS);
    }

    #[test]
    fn events_split_anywhere_across_reads_decode_the_same() {
        let bytes = BODY.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(
                decode(&[&bytes[..cut], &bytes[cut..]]),
                EVENTS,
                "cut at {cut}"
            );
        }
        let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode(&single_bytes), EVENTS);
    }

    #[test]
    fn an_unterminated_last_event_is_kept() {
        assert_eq!(decode(&[b"data: x\n\ndata: tail"]), ["x", "tail"]);
        assert_eq!(decode(&[b"data: x\n\n: comment"]), ["x"]);
    }

    #[test]
    fn lines_and_events_over_the_limit_are_refused_as_they_arrive() {
        // An unterminated line: refused once it passes the limit, whatever the reads.
        let mut decoder = SseDecoder::new(16);
        assert_eq!(decoder.push(b"data: 0123456789"), Ok(vec![]));
        assert_eq!(decoder.push(b"abc"), Err(TooLarge));
        let mut decoder = SseDecoder::new(16);
        assert_eq!(decoder.push(&[b'x'; 17]), Err(TooLarge));

        // An event whose data lines each fit but together do not.
        let mut decoder = SseDecoder::new(16);
        assert_eq!(decoder.push(b"data: 0123456789\n"), Ok(vec![]));
        assert_eq!(decoder.push(b"data: 0123456789\n"), Err(TooLarge));

        // At the limit exactly: accepted.
        let mut decoder = SseDecoder::new(16);
        assert_eq!(
            decoder.push(b"data: 0123456789\n\n"),
            Ok(vec!["0123456789".to_owned()])
        );
    }
}
