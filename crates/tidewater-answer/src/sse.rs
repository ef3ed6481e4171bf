//! Server-sent events: the `text/event-stream` body of a streamed completion turned into
//! the data of its events, however the network splits it into reads.

/// Decodes an event stream incrementally.
///
/// Follows the event-stream format for what chat-completion servers send: lines end in
/// `\n` or `\r\n`; `data:` lines accumulate (joined by `\n`) until a blank line ends the
/// event; comments (`: keep-alive`) and other fields (`event:`, `id:`, `retry:`) are
/// ignored. Lines are decoded only once complete, so a character split between two reads
/// arrives whole.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    /// The bytes of the line being read.
    line: Vec<u8>,
    /// The data of the event being read; `None` until it has a `data:` line.
    data: Option<String>,
}

impl SseDecoder {
    /// Takes the next bytes of the body and returns the data of each event they complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&rest[..newline]);
            rest = &rest[newline + 1..];
            let line = std::mem::take(&mut self.line);
            events.extend(self.end_line(&line));
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// At the end of the body: the data of an event the body left unterminated, if any.
    pub(crate) fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.end_line(&line);
        }
        self.data.take()
    }

    /// Handles one complete line; returns the event's data when the line ends an event.
    fn end_line(&mut self, line: &[u8]) -> Option<String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return self.data.take();
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
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            }
        }
        None
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
        let mut decoder = SseDecoder::default();
        let mut events: Vec<String> = pieces.iter().flat_map(|p| decoder.push(p)).collect();
        events.extend(decoder.finish());
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
}
