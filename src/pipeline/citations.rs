//! Citations: `[n]` markers in an answer mapped to the retrieved documents they number.

use serde::{Deserialize, Serialize};

use crate::retrieval::SearchHit;

/// One cited source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// The number used in the answer (1-based index into the documents).
    pub n: usize,
    pub id: String,
    pub title: String,
    pub url: String,
}

/// The numbers cited in `answer`, in order of first appearance, without repeats: `[1]`, `[2, 3]`, `[1][4]`.
/// Brackets holding anything but numbers and commas (`[a]`, `[1.5]`, `[]`) are not citations.
pub fn cited_numbers(answer: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inner = &after[..close];
        let nums: Option<Vec<usize>> = inner
            .split(',')
            .map(|p| {
                let p = p.trim();
                if !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse().ok()
                } else {
                    None
                }
            })
            .collect();
        match nums {
            Some(nums) => {
                for n in nums {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
                rest = &after[close + 1..];
            }
            None => rest = after,
        }
    }
    out
}

/// The citations of `answer` that name one of `documents` (numbers out of range are ignored).
pub fn map_citations(answer: &str, documents: &[SearchHit]) -> Vec<Citation> {
    cited_numbers(answer)
        .into_iter()
        .filter(|&n| n >= 1 && n <= documents.len())
        .map(|n| {
            let d = &documents[n - 1];
            Citation { n, id: d.id.clone(), title: d.title.clone(), url: d.url.clone() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_order_without_repeats() {
        assert_eq!(cited_numbers("A [2]. B [1][2]. C [3, 4]. D [x] [1.5] [] [0] [12345] [5"), [2, 1, 3, 4, 0]);
        assert_eq!(cited_numbers("nested [[1]]"), [1]);
    }

    #[test]
    fn out_of_range_ignored() {
        let hit = |id: &str| SearchHit {
            id: id.into(),
            rank: 1,
            score: 1.0,
            title: id.to_uppercase(),
            url: format!("https://x/{id}"),
            snippet: String::new(),
            source: String::new(),
        };
        let docs = [hit("a"), hit("b")];
        let c = map_citations("see [2] and [0] and [3] and [1]", &docs);
        assert_eq!(c.iter().map(|c| (c.n, c.id.as_str())).collect::<Vec<_>>(), [(2, "b"), (1, "a")]);
    }
}
