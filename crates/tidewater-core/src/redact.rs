//! Secrets out of printed text: the one function ([`redact`]) that every error message, log
//! line and printed configuration passes a URL, a connection string or an upstream's
//! message through before it leaves the process.
//!
//! It recognises secrets by their shape, not by where they came from: the password of a
//! URL's userinfo, and the value of a `name=value` pair whose name says it is secret (a
//! URL's query parameter, or a key/value connection string such as libpq's).

use std::borrow::Cow;

/// What a redacted secret is replaced with.
pub const MASK: &str = "***";

/// `text` with every secret in it replaced by [`MASK`]:
/// - the password of a URL's userinfo, for any `scheme://`:
///   `http://user:pw@host/v1` → `http://user:***@host/v1`,
///   `postgres://tw:pw@db/app` → `postgres://tw:***@db/app`;
/// - the value of a `name=value` pair whose name is secret: a query parameter
///   (`?api_key=…&sig=…`) or a key/value connection string (`password=…`, also quoted:
///   `password='a b'`). Names are compared case-insensitively, with `-` and `.` read as `_`:
///   those containing `password`, `passwd`, `secret`, `signature` or `credential`, those
///   ending in `token`, `key`, `sig` or `pwd`, and `pass` and `auth`.
///
/// A user name alone (`http://user@host`) is kept. Text without secrets comes back
/// borrowed.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut secrets = userinfo_passwords(text);
    secrets.extend(secret_values(text));
    if secrets.is_empty() {
        return Cow::Borrowed(text);
    }
    secrets.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in secrets {
        if start < copied {
            // Overlaps the secret masked last: one mask covers both.
            copied = copied.max(end);
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(MASK);
        copied = end;
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

/// Byte ranges of the passwords in URL userinfo (`scheme://user:PASSWORD@host`).
fn userinfo_passwords(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let separator = from + found;
        from = separator + 3;
        if !ends_with_scheme(&bytes[..separator]) {
            continue;
        }
        let authority = from;
        let end = bytes[authority..]
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#') || ends_value(b))
            .map_or(bytes.len(), |n| authority + n);
        let Some(at) = text[authority..end].rfind('@').map(|n| authority + n) else {
            continue;
        };
        if let Some(colon) = text[authority..at].find(':').map(|n| authority + n) {
            if colon + 1 < at {
                ranges.push((colon + 1, at));
            }
        }
    }
    ranges
}

/// Whether `before` ends with a URL scheme: a letter, then letters, digits, `+`, `-`, `.`.
fn ends_with_scheme(before: &[u8]) -> bool {
    let scheme_len = before
        .iter()
        .rev()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        .count();
    scheme_len > 0 && before[before.len() - scheme_len].is_ascii_alphabetic()
}

/// Byte ranges of the values of secret `name=value` pairs.
fn secret_values(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    for (equals, _) in text.match_indices('=') {
        // The name: the run of name characters before `=`, spaces allowed in between
        // (libpq accepts `password = x`).
        let name_end = equals
            - bytes[..equals]
                .iter()
                .rev()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
        let name_start = name_end
            - bytes[..name_end]
                .iter()
                .rev()
                .take_while(|&&b| is_name_byte(b))
                .count();
        if name_start == name_end || !is_secret_name(&text[name_start..name_end]) {
            continue;
        }
        let in_query = name_start > 0 && matches!(bytes[name_start - 1], b'?' | b'&');
        let mut start = equals + 1;
        if !in_query {
            start += bytes[start..]
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
        }
        match bytes.get(start) {
            Some(&quote @ (b'\'' | b'"')) => {
                let inner = start + 1;
                let end = closing_quote(&bytes[inner..], quote).map_or(bytes.len(), |n| inner + n);
                if end > inner {
                    ranges.push((inner, end));
                }
            }
            _ => {
                let end = bytes[start..]
                    .iter()
                    .position(|&b| ends_value(b) || (in_query && matches!(b, b'&' | b'#')))
                    .map_or(bytes.len(), |n| start + n);
                if end > start {
                    ranges.push((start, end));
                }
            }
        }
    }
    ranges
}

/// Bytes a parameter name is made of.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Bytes that end an unquoted value or a URL in running text.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\'' | b'`' | b'<' | b'>')
}

/// The position of the quote that closes a value, skipping backslash-escaped ones.
fn closing_quote(bytes: &[u8], quote: u8) -> Option<usize> {
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' => escaped = true,
            _ if b == quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// Whether a parameter with this name holds a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace(['-', '.'], "_");
    ["password", "passwd", "secret", "signature", "credential"]
        .iter()
        .any(|part| name.contains(part))
        || ["token", "key", "sig", "pwd"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
        || matches!(name.as_str(), "pass" | "auth")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_everything_else_kept() {
        let cases = [
            // URL userinfo, any scheme; the user name stays.
            ("http://user:pw@host/v1", "http://user:***@host/v1"),
            (
                "https://llmuser:hunter2pw@127.0.0.1:8080/v1/chat/completions",
                "https://llmuser:***@127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "postgres://tw:s3cr3tpw@127.0.0.1:1/x",
                "postgres://tw:***@127.0.0.1:1/x",
            ),
            ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
            ("redis://:onlypw@h:6379", "redis://:***@h:6379"),
            ("http://user@host/v1", "http://user@host/v1"),
            ("http://host:8080/v1", "http://host:8080/v1"),
            ("http://host/a@b:c", "http://host/a@b:c"),
            // Secret query parameters, case-insensitively; others stay.
            (
                "https://h/v1?api_key=abc&model=m",
                "https://h/v1?api_key=***&model=m",
            ),
            (
                "https://h/x?apikey=1&KEY=2&Token=3&access_token=4#frag",
                "https://h/x?apikey=***&KEY=***&Token=***&access_token=***#frag",
            ),
            (
                "https://acct.blob/c?sv=2022&sig=AbC%2B&se=1",
                "https://acct.blob/c?sv=2022&sig=***&se=1",
            ),
            (
                "https://s3/b?X-Amz-Signature=ff&X-Amz-Credential=AK/1&X-Amz-Security-Token=t",
                "https://s3/b?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Security-Token=***",
            ),
            (
                "http://h/?password=pw&secret=s&client_secret=c&max_tokens=64",
                "http://h/?password=***&secret=***&client_secret=***&max_tokens=64",
            ),
            // Key/value connection strings, quoted values included.
            (
                "host=db user=tw password=s3cr3t dbname=app",
                "host=db user=tw password=*** dbname=app",
            ),
            (
                "host=db password = 'a b\\' c' port=5432",
                "host=db password = '***' port=5432",
            ),
            ("PASSWORD=\"x y\" user=u", "PASSWORD=\"***\" user=u"),
            ("sslpassword=k host=h", "sslpassword=*** host=h"),
            ("password='unterminated", "password='***"),
            // Secrets inside longer text, e.g. an error message.
            (
                "cannot reach http://u:pw@h:1/v1 (password=x): refused",
                "cannot reach http://u:***@h:1/v1 (password=*** refused",
            ),
            (
                "url=\"http://u:pw@h/\" dsn='user=u password=p'",
                "url=\"http://u:***@h/\" dsn='user=u password=***'",
            ),
            // Nothing secret.
            ("", ""),
            ("no secrets here: a = b, key", "no secrets here: a = b, key"),
            ("password", "password"),
            ("token=", "token="),
            ("://odd and ://x:y@z", "://odd and ://x:y@z"),
            ("ünïcode=ok · http://h/é?q=ü", "ünïcode=ok · http://h/é?q=ü"),
            ("ü http://ü:ö@ä/é", "ü http://ü:***@ä/é"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "redact({input:?})");
        }
    }

    #[test]
    fn text_without_secrets_is_borrowed() {
        assert!(matches!(redact("http://h:1/v1"), Cow::Borrowed(_)));
        assert!(matches!(redact("http://u:p@h"), Cow::Owned(_)));
    }

    #[test]
    fn any_cut_of_a_text_is_redacted_without_panicking() {
        let text = "é postgres://tw:hunter2@h/db?sig=hunter2 password='hunter2' ü";
        assert_eq!(
            redact(text),
            "é postgres://tw:***@h/db?sig=*** password='***' ü"
        );
        for (cut, _) in text.char_indices() {
            let _ = redact(&text[..cut]);
            let _ = redact(&text[cut..]);
        }
    }
}
