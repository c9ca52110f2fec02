//! The pipeline's prompt templates, kept as data: [`Prompts`] is serde, its defaults are `prompts.json` beside
//! this file, and a caller may replace any of them (a config file, the demo page's settings, an evaluation run).
//!
//! Templates use `{name}` placeholders, filled in one pass ([`render`]): text substituted into a template is never
//! scanned again, so a question or snippet containing `{caption}` stays literal. Untrusted text (snippets, model
//! output, the user's question) goes through [`plain`] first, which defuses tag-like `<...>` sequences so that it
//! cannot smuggle a tokenizer's special tokens (`<image>`, `<|im_start|>`, `<end_of_utterance>`) into a prompt.

use serde::{Deserialize, Serialize};

/// Source of [`Prompts::default`].
pub const DEFAULT_PROMPTS_JSON: &str = include_str!("prompts.json");

/// Every prompt the pipeline sends to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prompts {
    /// Captioner (user turn after the image). No placeholders.
    pub caption: String,
    /// VLM rephraser (user turn after the image): `{question}`, `{caption}`.
    pub rephrase_vlm: String,
    /// Legacy text-only rephraser: `{question}`, `{caption}`, `{tags}`, `{ocr}`.
    pub rephrase_legacy: String,
    /// Generator system message. No placeholders.
    pub generate_system: String,
    /// Generator user turn: `{question}`, `{caption}`, `{sources}`.
    pub generate: String,
    /// Generator user turn when retrieval failed or found nothing: `{question}`, `{caption}`.
    pub generate_no_sources: String,
    /// One numbered source inside `{sources}`: `{n}`, `{title}`, `{snippet}`, `{url}`, `{id}`.
    pub source: String,
}

impl Default for Prompts {
    fn default() -> Self {
        #[derive(Deserialize)]
        struct All {
            caption: String,
            rephrase_vlm: String,
            rephrase_legacy: String,
            generate_system: String,
            generate: String,
            generate_no_sources: String,
            source: String,
        }
        // prompts.json is part of the crate and checked by a unit test; a parse failure is a build defect.
        let a: All = serde_json::from_str(DEFAULT_PROMPTS_JSON).expect("src/pipeline/prompts.json is valid");
        Self {
            caption: a.caption,
            rephrase_vlm: a.rephrase_vlm,
            rephrase_legacy: a.rephrase_legacy,
            generate_system: a.generate_system,
            generate: a.generate,
            generate_no_sources: a.generate_no_sources,
            source: a.source,
        }
    }
}

/// Fills `{name}` placeholders from `vars` in one left-to-right pass; unknown placeholders and lone braces are
/// kept as written.
pub fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + vars.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let hit = after.find('}').and_then(|close| {
            let name = &after[..close];
            vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (close, *v))
        });
        match hit {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Untrusted text made safe to put in a prompt: tag-like `<name>` / `<|name|>` runs get their angle brackets
/// replaced by `‹ ›` (so they tokenize as ordinary text), control characters other than newline and tab are
/// dropped, and surrounding whitespace is trimmed. Everything else is kept: `a < b` stays as written.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '<' {
            // a tag: `<` then up to 64 chars without whitespace or another `<`, then `>`
            let tail = &text[i + 1..];
            let end = tail
                .char_indices()
                .take(65)
                .find(|(_, ch)| *ch == '>' || *ch == '<' || ch.is_whitespace())
                .filter(|(_, ch)| *ch == '>')
                .map(|(j, _)| j);
            if let Some(j) = end.filter(|&j| j > 0) {
                out.push('‹');
                out.extend(tail[..j].chars().filter(|ch| !ch.is_control()));
                out.push('›');
                // skip the tag body and its '>'
                while chars.peek().is_some_and(|(k, _)| *k <= i + j + 1) {
                    chars.next();
                }
                continue;
            }
            out.push('<');
        } else if c.is_control() && c != '\n' && c != '\t' {
            continue;
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_name_their_placeholders() {
        let p = Prompts::default();
        assert!(p.rephrase_vlm.contains("{question}") && p.rephrase_vlm.contains("{caption}"));
        assert!(p.rephrase_legacy.contains("{tags}") && p.rephrase_legacy.contains("{ocr}"));
        assert!(p.generate.contains("{sources}"));
        assert!(p.source.contains("{n}") && p.source.contains("{snippet}"));
        // partial JSON keeps the other defaults
        let q: Prompts = serde_json::from_str(r#"{"caption":"Say what you see."}"#).unwrap();
        assert_eq!(q.caption, "Say what you see.");
        assert_eq!(q.generate, p.generate);
    }

    #[test]
    fn render_is_one_pass() {
        let t = "Q: {question} C: {caption} {unknown} {";
        let r = render(t, &[("question", "what is {caption}?"), ("caption", "a red circle")]);
        assert_eq!(r, "Q: what is {caption}? C: a red circle {unknown} {");
    }

    #[test]
    fn plain_defuses_special_tokens() {
        assert_eq!(plain("see <image> and <|im_start|>x"), "see ‹image› and ‹|im_start|›x");
        assert_eq!(plain("  a < b and c<d>e\u{7}  "), "a < b and c‹d›e");
        assert_eq!(plain("<end_of_utterance>\nok"), "‹end_of_utterance›\nok");
        assert_eq!(plain("x <> y"), "x <> y");
    }
}
