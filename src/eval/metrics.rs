//! Answer and retrieval metrics (SQuAD-style answer normalization, exact match, alias match, token F1,
//! Recall@k and reciprocal rank). Pure functions, no I/O; the same code runs natively and on wasm32.

use std::collections::HashMap;

/// Characters removed as punctuation: ASCII punctuation (Python's `string.punctuation`, as in the SQuAD
/// script) plus the common typographic quotes, dashes and ellipsis that models like to emit.
fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '\u{2018}'
                | '\u{2019}'
                | '\u{201C}'
                | '\u{201D}'
                | '\u{2013}'
                | '\u{2014}'
                | '\u{2026}'
                | '\u{00AB}'
                | '\u{00BB}'
                | '\u{00BF}'
                | '\u{00A1}'
        )
}

fn is_article(w: &str) -> bool {
    matches!(w, "a" | "an" | "the")
}

/// SQuAD-style normalization: lowercase, delete punctuation (no space is inserted: "don't" → "dont"),
/// drop the articles a/an/the as whole words, collapse whitespace. Returns the normalized tokens.
pub fn normalize_tokens(s: &str) -> Vec<String> {
    let lowered = s.to_lowercase();
    let stripped: String = lowered.chars().filter(|&c| !is_punct(c)).collect();
    stripped.split_whitespace().filter(|w| !is_article(w)).map(str::to_string).collect()
}

/// [`normalize_tokens`] joined by single spaces.
pub fn normalize_answer(s: &str) -> String {
    normalize_tokens(s).join(" ")
}

/// Exact match after normalization.
pub fn exact_match(prediction: &str, gold: &str) -> bool {
    normalize_answer(prediction) == normalize_answer(gold)
}

/// Exact match against any of the gold answers (aliases). False when `golds` is empty.
pub fn alias_match<S: AsRef<str>>(prediction: &str, golds: &[S]) -> bool {
    let p = normalize_answer(prediction);
    golds.iter().any(|g| normalize_answer(g.as_ref()) == p)
}

/// Token F1 between normalized bags of tokens (multiset overlap, as in SQuAD). When either side normalizes to
/// no tokens, F1 is 1 if both do and 0 otherwise.
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let p = normalize_tokens(prediction);
    let g = normalize_tokens(gold);
    if p.is_empty() || g.is_empty() {
        return if p.is_empty() && g.is_empty() { 1.0 } else { 0.0 };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &p {
        if let Some(n) = counts.get_mut(t.as_str()) {
            if *n > 0 {
                *n -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Maximum token F1 over the gold answers; 0 when `golds` is empty.
pub fn max_token_f1<S: AsRef<str>>(prediction: &str, golds: &[S]) -> f64 {
    golds.iter().map(|g| token_f1(prediction, g.as_ref())).fold(0.0, f64::max)
}

/// Recall@k: the fraction of the distinct gold document ids that appear among the first `k` entries of `ranked`.
/// With one gold id this is the hit rate. `None` when there are no gold ids (the item does not count).
pub fn recall_at_k<R: AsRef<str>, G: AsRef<str>>(ranked: &[R], gold: &[G], k: usize) -> Option<f64> {
    let mut gold_set: Vec<&str> = gold.iter().map(|g| g.as_ref()).collect();
    gold_set.sort_unstable();
    gold_set.dedup();
    if gold_set.is_empty() {
        return None;
    }
    let top = &ranked[..k.min(ranked.len())];
    let found = gold_set.iter().filter(|g| top.iter().any(|r| r.as_ref() == **g)).count();
    Some(found as f64 / gold_set.len() as f64)
}

/// Reciprocal rank of the first gold id in `ranked` (1-based rank), 0 when none appears; the mean over items is
/// MRR. `None` when there are no gold ids.
pub fn reciprocal_rank<R: AsRef<str>, G: AsRef<str>>(ranked: &[R], gold: &[G]) -> Option<f64> {
    if gold.is_empty() {
        return None;
    }
    Some(
        ranked.iter().position(|r| gold.iter().any(|g| g.as_ref() == r.as_ref())).map_or(0.0, |i| 1.0 / (i + 1) as f64),
    )
}

/// Mean of the values, `None` for none.
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (mut s, mut n) = (0.0, 0usize);
    for v in values {
        s += v;
        n += 1;
    }
    (n > 0).then(|| s / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize_answer("  The  Eiffel-Tower! "), "eiffeltower");
        assert_eq!(normalize_answer("An apple, a day"), "apple day");
        assert_eq!(normalize_answer("theatre"), "theatre");
    }

    #[test]
    fn f1_and_rank() {
        assert!((token_f1("red big car", "big red truck") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(reciprocal_rank(&["x", "y", "g"], &["g"]), Some(1.0 / 3.0));
        assert_eq!(recall_at_k(&["x", "g"], &["g"], 1), Some(0.0));
        assert_eq!(recall_at_k::<&str, &str>(&["x"], &[], 1), None);
    }
}
