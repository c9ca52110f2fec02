//! Running the comparison: both pipeline arms on an item with the same retrieval and generator, and the
//! side-by-side judge. Target-independent (the browser can call it on small sets); file I/O is the caller's.

use crate::error::Result;
use crate::generation::{now_ms, CancelToken, GenerationConfig};
use crate::pipeline::generator::Generator;
use crate::pipeline::{Arm, Pipeline, PipelineRequest, PipelineResult};
use crate::processor::chat::Message;

use super::{stats, ArmRecord, EvalItem, EvalRecord, JudgeRecord};

/// The judge's instructions: the criteria of the side-by-side comparison in the design this project follows.
pub const JUDGE_SYSTEM: &str = "You compare two answers to the same question about an image and pick the better one. \
Judge by: relevance to the question and the instruction; completeness; factual and logical errors; hallucinations \
(claims not supported by the question or the cited sources); grammar and readability. Neither answer's position nor \
its length is a reason to prefer it. If they are equally good or equally bad, say tie.";

/// The judge's user message for one item. The last line asks for the verdict alone.
pub fn judge_prompt(question: &str, answer_a: &str, answer_b: &str) -> String {
    format!(
        "Question: {question}\n\nAnswer A:\n{answer_a}\n\nAnswer B:\n{answer_b}\n\n\
         Which answer is better? Reply with exactly one of: A, B, tie."
    )
}

/// The verdict in a judge's reply: the whole reply if it is `A`, `B` or `tie`, else the last such word of the
/// last line that has one (`"Verdict: B"`, `"B is a better answer."` → B). Unparseable replies are kept raw (counted invalid).
pub fn extract_verdict(reply: &str) -> String {
    if stats::Verdict::parse(reply).is_some() {
        return reply.trim().to_string();
    }
    for line in reply.lines().rev() {
        let words: Vec<&str> = line.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
        // in free text only capital A / B count (not the article "a"), and "tie" in any case
        if let Some(w) = words.iter().rev().find(|w| **w == "A" || **w == "B" || w.eq_ignore_ascii_case("tie")) {
            return w.to_string();
        }
    }
    reply.trim().to_string()
}

/// One arm's record from a pipeline result.
pub fn arm_record(r: &PipelineResult, ms: f64) -> ArmRecord {
    ArmRecord {
        query: r.query.clone(),
        retrieved_ids: r.documents.iter().map(|d| d.id.clone()).collect(),
        answer: r.answer.clone(),
        ms,
    }
}

/// Runs both arms (legacy first, then VLM) on one item. `image` is the item's image bytes.
pub async fn run_item(pipeline: &Pipeline, item: &EvalItem, image: Option<Vec<u8>>, k: usize) -> Result<EvalRecord> {
    let mut arms = Vec::with_capacity(2);
    for arm in [Arm::Legacy, Arm::Vlm] {
        let req = PipelineRequest {
            tags: item.tags.clone(),
            ocr_text: item.ocr_text.clone(),
            k: Some(k),
            ..PipelineRequest::new(item.question.clone(), image.clone(), arm)
        };
        let t0 = now_ms();
        let r = pipeline.run(&req, &CancelToken::default(), |_| {}).await?;
        arms.push(arm_record(&r, now_ms() - t0));
    }
    let vlm = arms.pop().unwrap_or_default();
    let legacy = arms.pop().unwrap_or_default();
    Ok(EvalRecord {
        id: item.id.clone(),
        image: item.image.clone(),
        question: item.question.clone(),
        answers: item.answers.clone(),
        gold_doc_ids: item.gold_doc_ids.clone(),
        legacy,
        vlm,
        judge: None,
    })
}

/// Asks `judge` which arm's answer is better, in the order [`stats::judge_swapped`] gives this item (greedy).
pub async fn judge_record(judge: &dyn Generator, rec: &EvalRecord, seed: u64) -> Result<JudgeRecord> {
    let swapped = stats::judge_swapped(&rec.id, seed);
    let (a, b) = if swapped { (&rec.legacy.answer, &rec.vlm.answer) } else { (&rec.vlm.answer, &rec.legacy.answer) };
    let messages =
        vec![Message::text("system", JUDGE_SYSTEM), Message::text("user", &judge_prompt(&rec.question, a, b))];
    let cfg = GenerationConfig { max_new_tokens: 64, temperature: 0.0, ..Default::default() };
    let reply = judge.generate(&messages, &cfg, &CancelToken::default(), &mut |_| {}).await?;
    let verdict = extract_verdict(&reply);
    let rationale = (reply.trim() != verdict).then(|| reply.trim().to_string());
    Ok(JudgeRecord { swapped, verdict, rationale })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_from_replies() {
        assert_eq!(extract_verdict(" B. "), "B.");
        assert_eq!(extract_verdict("B is a better answer."), "B");
        assert_eq!(extract_verdict("Answer A is more complete.\nVerdict: A"), "A");
        assert_eq!(extract_verdict("Both are fine.\ntie"), "tie");
        assert_eq!(extract_verdict("I cannot decide"), "I cannot decide");
        assert!(stats::Verdict::parse(&extract_verdict("I cannot decide")).is_none());
    }

    #[test]
    fn prompt_holds_both_answers_and_the_criteria() {
        let p = judge_prompt("q?", "first", "second");
        assert!(p.contains("Answer A:\nfirst") && p.contains("Answer B:\nsecond"));
        for c in ["relevance", "completeness", "hallucinations", "grammar", "logical"] {
            assert!(JUDGE_SYSTEM.contains(c), "{c}");
        }
    }
}
