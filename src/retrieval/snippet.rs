//! Plain-text snippets: a window of a document's text around the query terms it matches best.
//!
//! Used by the embedded server and by the adapters whose engine returns whole documents (OpenSearch, Qdrant), so
//! every `search/v1` snippet is made the same way. Output is plain text with `…` marking cut ends; whitespace is
//! collapsed. Matching is case-insensitive on alphanumeric words, with a crude prefix rule (`flag` ~ `flags`)
//! standing in for stemming; it only chooses the window, it does not rank documents.

/// Default snippet length, in chars.
pub const DEFAULT_SNIPPET_CHARS: usize = 220;

/// Words too common to centre a snippet on.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "does", "for", "from", "how", "in", "is", "it", "its", "of",
    "on", "or", "that", "the", "this", "to", "was", "what", "when", "where", "which", "who", "why", "with",
];

/// Lower-cased, de-duplicated content words of a query.
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for (_, w) in words(query) {
        let w = w.to_lowercase();
        if !STOPWORDS.contains(&w.as_str()) && !terms.contains(&w) {
            terms.push(w);
        }
    }
    terms
}

/// A window of at most `max_chars` chars (plus the `…` markers) of `text`, placed to hold as many distinct query
/// terms as possible; the text's beginning when nothing matches.
pub fn make_snippet(text: &str, query: &str, max_chars: usize) -> String {
    let terms = query_terms(query);
    let tokens: Vec<(usize, String)> = words(text).map(|(at, w)| (at, w.to_lowercase())).collect();
    let matches = |w: &str| -> Option<usize> {
        terms
            .iter()
            .position(|t| w == t || (t.len() >= 4 && w.starts_with(t.as_str())) || (w.len() >= 4 && t.starts_with(w)))
    };
    // Candidate starts: a little before each matching word, so the reader sees some context.
    let mut best: Option<(usize, usize)> = None; // (distinct terms, start byte)
    for (i, (_, w)) in tokens.iter().enumerate() {
        if matches(w).is_none() {
            continue;
        }
        // Up to 4 words of lead-in, but no more than a quarter of the window.
        let at = tokens[i].0;
        let first =
            (i.saturating_sub(4)..=i).find(|&j| text[tokens[j].0..at].chars().count() <= max_chars / 4).unwrap_or(i);
        let start = tokens[first].0;
        let end = byte_after_chars(text, start, max_chars);
        let mut seen = vec![false; terms.len()];
        for (at, w2) in tokens[first..].iter() {
            if *at + w2.len() > end {
                break;
            }
            if let Some(t) = matches(w2) {
                seen[t] = true;
            }
        }
        let distinct = seen.iter().filter(|s| **s).count();
        if best.is_none_or(|(d, _)| distinct > d) {
            best = Some((distinct, start));
        }
    }
    let mut start = best.map_or(0, |(_, s)| s);
    // Near the end of the text, slide the window back so it is still full (whole words only).
    let tail_chars = text[start..].chars().count();
    if tail_chars < max_chars {
        let spare = max_chars - tail_chars;
        let earliest = text[..start].char_indices().rev().nth(spare.saturating_sub(1)).map_or(0, |(i, _)| i);
        start = tokens.iter().map(|(at, _)| *at).find(|&at| at >= earliest && at <= start).unwrap_or(start);
    }
    // Start on a whitespace boundary, so punctuation or markup glued to the first word is kept.
    let start =
        text[..start].rfind(char::is_whitespace).map_or(0, |i| i + text[i..].chars().next().map_or(1, char::len_utf8));
    window(text, start, max_chars)
}

/// Words as (byte offset, word), split on anything not alphanumeric.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(move |w| (w.as_ptr() as usize - text.as_ptr() as usize, w))
}

/// Byte index `max_chars` chars after `start` (or the end of `text`).
fn byte_after_chars(text: &str, start: usize, max_chars: usize) -> usize {
    text[start..].char_indices().nth(max_chars).map_or(text.len(), |(i, _)| start + i)
}

/// `text[start..]` cut to `max_chars` at a word boundary, whitespace collapsed, `…` at cut ends.
fn window(text: &str, start: usize, max_chars: usize) -> String {
    let mut end = byte_after_chars(text, start, max_chars);
    if end < text.len() {
        // Back off to the last whitespace so no word is cut, unless that would drop most of the window.
        if let Some(ws) = text[start..end].rfind(char::is_whitespace) {
            if ws > (end - start) / 2 {
                end = start + ws;
            }
        }
    }
    let body: Vec<&str> = text[start..end].split_whitespace().collect();
    let mut out = String::with_capacity(end - start + 8);
    if start > 0 {
        out.push('…');
    }
    out.push_str(&body.join(" "));
    if end < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_drop_stopwords_and_duplicates() {
        assert_eq!(query_terms("What is the RED circle, the red one?"), vec!["red", "circle", "one"]);
    }

    #[test]
    fn window_centres_on_matches() {
        let text =
            "Alpha beta gamma. ".repeat(30) + "A red octagon means stop at a junction. " + &"Tail words. ".repeat(30);
        let s = make_snippet(&text, "red octagon", 80);
        assert!(s.contains("red octagon means stop"), "{s}");
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.chars().count() <= 82, "{s}");
    }

    #[test]
    fn no_match_gives_the_beginning_and_short_text_is_whole() {
        assert_eq!(make_snippet("Short  text\nhere.", "zebra", 80), "Short text here.");
        assert_eq!(make_snippet("<b>x</b> one two three zebra four", "zebra", 80), "<b>x</b> one two three zebra four");
        let s = make_snippet(&"word ".repeat(100), "zebra", 20);
        assert!(s.starts_with("word") && s.ends_with('…'));
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let text = "Ünïcödé ".repeat(50) + "Straße signs";
        let s = make_snippet(&text, "straße", 30);
        assert!(s.contains("Straße"), "{s}");
    }
}
