//! Turning a document body into the plain text that is chunked and embedded.

use tidewater_core::DocumentFormat;

/// Render width for HTML. Wide enough that html2text never wraps a paragraph, so line
/// breaks in the output are the document's own and sentence splitting is not disturbed.
const HTML_WIDTH: usize = 1 << 20;

/// The visible text of a document body.
///
/// - [`DocumentFormat::Html`]: rendered to plain text with html2text — scripts, styles and
///   markup are dropped, no link footnotes or decorations (`*`, `#`, `[…]`) are added,
///   block elements (paragraphs, headings, list items, table cells) become paragraphs
///   separated by a blank line, and lines are not wrapped.
/// - [`DocumentFormat::Text`] and [`DocumentFormat::Markdown`]: the body as written, with
///   `\r\n` line endings turned into `\n`.
pub fn extract_text(body: &str, format: DocumentFormat) -> String {
    match format {
        DocumentFormat::Html => html_to_text(body),
        DocumentFormat::Text | DocumentFormat::Markdown => body.replace("\r\n", "\n"),
    }
}

fn html_to_text(html: &str) -> String {
    let rendered = html2text::config::with_decorator(html2text::render::TrivialDecorator::new())
        .link_footnotes(false)
        // Table cells as their own lines rather than a grid drawn with box characters.
        .raw_mode(true)
        // Never fail for lack of width (deeply nested blocks); a long line is harmless here.
        .allow_width_overflow()
        .string_from_read(html.as_bytes(), HTML_WIDTH);
    match rendered {
        Ok(text) => tidy(&text),
        // html5ever recovers from any malformed markup, so this is close to unreachable;
        // stripping the tags still indexes the words instead of dropping the document.
        Err(_) => tidy(&strip_tags(html)),
    }
}

/// Trims each line (indentation carries no meaning once markup is gone), drops leading and trailing blank lines and collapses runs of blank
/// lines into one, so that paragraphs are separated by exactly one blank line.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_pending = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            blank_pending = !out.is_empty();
            continue;
        }
        if blank_pending {
            out.push_str("\n\n");
            blank_pending = false;
        } else if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// Last-resort extraction: everything outside `<…>`, with block-level breaks lost.
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_drops_scripts_styles_and_markup() {
        let html = r#"<html><head><title>T</title><style>p { color: red; }</style>
            <script>var x = "secret";</script></head><body>
            <h1>Heading</h1>
            <p>First <b>bold</b> paragraph with a <a href="https://example.com">link</a>.</p>
            <p>Second paragraph.</p>
            <ul><li>one</li><li>two</li></ul>
            </body></html>"#;
        let text = extract_text(html, DocumentFormat::Html);
        assert!(!text.contains("secret"), "{text}");
        assert!(!text.contains("color"), "{text}");
        assert!(!text.contains("example.com"), "{text}");
        assert!(!text.contains('['), "{text}");
        assert!(!text.contains('*'), "{text}");
        assert!(
            text.contains("First bold paragraph with a link.\n\nSecond paragraph."),
            "{text:?}"
        );
        assert!(text.starts_with("Heading"), "{text:?}");
    }

    #[test]
    fn html_does_not_wrap_long_paragraphs() {
        let sentence = "word ".repeat(500);
        let html = format!("<p>{sentence}</p>");
        let text = extract_text(&html, DocumentFormat::Html);
        assert_eq!(text.lines().count(), 1, "{text:?}");
    }

    #[test]
    fn text_normalises_line_endings() {
        assert_eq!(
            extract_text("a\r\nb\r\n\r\nc", DocumentFormat::Text),
            "a\nb\n\nc"
        );
        assert_eq!(extract_text("# T\r\n", DocumentFormat::Markdown), "# T\n");
    }

    #[test]
    fn strip_tags_keeps_text() {
        assert_eq!(tidy(&strip_tags("<p>a<b>b</b></p>")), "a b");
    }
}
