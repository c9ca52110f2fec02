//! Running the comparison: both pipeline arms on an item with the same retrieval and generator, and the
//! side-by-side judge. Target-independent (the browser can call it on small sets); file I/O is the caller's.

use crate::error::{Error, Result};
use crate::generation::{now_ms, CancelToken, GenerationConfig};
use crate::pipeline::generator::Generator;
use crate::pipeline::timer::timeout;
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

/// The verdict in a judge's reply: the whole reply if it is `A`, `B` or `tie`; else the line that starts with
/// `Verdict` (the last such), or failing that the last line naming a verdict, when that line names exactly one
/// (`"Verdict: B"`, `"B is a better answer."` → B). A line naming two (`"A is better than B."`, `"a tie between A
/// and B"`) is ambiguous, and the reply is kept raw, like an unparseable one: it counts as invalid, never as a
/// guess.
pub fn extract_verdict(reply: &str) -> String {
    if stats::Verdict::parse(reply).is_some() {
        return reply.trim().to_string();
    }
    // the distinct verdict words of a line: in free text only capital A / B count (not the article "a"), and
    // "tie" in any case
    let verdicts = |line: &str| {
        let mut found: Vec<&'static str> = Vec::new();
        for w in line.split(|c: char| !c.is_alphanumeric()) {
            let v = match w {
                "A" => "A",
                "B" => "B",
                _ if w.eq_ignore_ascii_case("tie") => "tie",
                _ => continue,
            };
            if !found.contains(&v) {
                found.push(v);
            }
        }
        found
    };
    let labelled = reply.lines().rev().find(|l| l.trim_start().to_ascii_lowercase().starts_with("verdict"));
    let line = labelled.or_else(|| reply.lines().rev().find(|l| !verdicts(l).is_empty()));
    match line.map(verdicts).as_deref() {
        Some([one]) => one.to_string(),
        _ => reply.trim().to_string(),
    }
}

/// How long the judge may take over one item before the item counts as unjudged (a stalled endpoint must not
/// hang the evaluation).
pub const JUDGE_TIMEOUT_MS: u64 = 120_000;

/// One arm's record from a pipeline result.
pub fn arm_record(r: &PipelineResult, ms: f64) -> ArmRecord {
    ArmRecord {
        query: r.query.clone(),
        retrieved_ids: r.documents.iter().map(|d| d.id.clone()).collect(),
        answer: r.answer.clone(),
        ms,
        errors: r.trace.iter().filter_map(|e| e.error.as_ref().map(|err| format!("{}: {err}", e.step))).collect(),
    }
}

/// Runs both arms (legacy first, then VLM) on one item. `image` is the item's image bytes. Each arm starts with
/// the engine's image cache empty, so each pays for its own image encode (the VLM arm would otherwise reuse the
/// legacy arm's and look cheaper than it is).
pub async fn run_item(pipeline: &Pipeline, item: &EvalItem, image: Option<Vec<u8>>, k: usize) -> Result<EvalRecord> {
    let mut arms = Vec::with_capacity(2);
    for arm in [Arm::Legacy, Arm::Vlm] {
        if let Some(engine) = pipeline.engine() {
            engine.clear_image_cache();
        }
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
/// A judge that fails or takes longer than [`JUDGE_TIMEOUT_MS`] gives a record whose verdict says so (counted
/// invalid) rather than ending the evaluation; only a cancel or a lost GPU device is an error.
pub async fn judge_record(judge: &dyn Generator, rec: &EvalRecord, seed: u64) -> Result<JudgeRecord> {
    let swapped = stats::judge_swapped(&rec.id, seed);
    let (a, b) = if swapped { (&rec.legacy.answer, &rec.vlm.answer) } else { (&rec.vlm.answer, &rec.legacy.answer) };
    let messages =
        vec![Message::text("system", JUDGE_SYSTEM), Message::text("user", &judge_prompt(&rec.question, a, b))];
    let cfg = GenerationConfig { max_new_tokens: 64, temperature: 0.0, ..Default::default() };
    let cancel = CancelToken::default();
    let reply = match timeout("judge", JUDGE_TIMEOUT_MS, judge.generate(&messages, &cfg, &cancel, &mut |_| {})).await {
        Ok(reply) => reply,
        Err(e @ (Error::Cancelled | Error::DeviceLost(_))) => return Err(e),
        Err(e) => return Ok(JudgeRecord { swapped, verdict: format!("(the judge failed: {e})"), rationale: None }),
    };
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
        // two verdicts on the deciding line: ambiguous, kept raw (it once took the last word: B, A, B)
        for reply in ["A is better than B.", "Answer B is better; answer A hallucinates", "It's a tie between A and B"]
        {
            assert_eq!(extract_verdict(reply), reply, "{reply}");
            assert!(stats::Verdict::parse(&extract_verdict(reply)).is_none(), "{reply}");
        }
        // a labelled verdict wins over a later remark
        assert_eq!(extract_verdict("Verdict: B\n(A was shorter.)"), "B");
        assert_eq!(extract_verdict("verdict - tie"), "tie");
        assert!(stats::Verdict::parse(&extract_verdict("I cannot decide")).is_none());
    }

    /// A judge whose every call fails with `err`.
    #[cfg(not(target_arch = "wasm32"))]
    struct FailingJudge(fn() -> Error);

    #[cfg(not(target_arch = "wasm32"))]
    impl Generator for FailingJudge {
        fn name(&self) -> String {
            "failing".into()
        }
        fn generate<'a>(
            &'a self,
            _: &'a [Message],
            _: &'a GenerationConfig,
            _: &'a CancelToken,
            _: &'a mut dyn FnMut(&str),
        ) -> crate::pipeline::generator::GenerateFuture<'a> {
            let err = (self.0)();
            Box::pin(async move { Err(err) })
        }
    }

    /// A judge that fails leaves the item unjudged (an invalid verdict that says why) instead of ending the run;
    /// a lost device or a cancel still ends it.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn a_failing_judge_marks_the_item_not_the_run() {
        let rec = EvalRecord {
            id: "i".into(),
            image: String::new(),
            question: "q".into(),
            answers: vec![],
            gold_doc_ids: vec![],
            legacy: ArmRecord::default(),
            vlm: ArmRecord::default(),
            judge: None,
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let http = FailingJudge(|| Error::Http { url: "http://judge".into(), detail: "HTTP 500".into() });
        let j = rt.block_on(judge_record(&http, &rec, 0)).expect("an HTTP error is not fatal");
        assert!(j.outcome().is_none() && j.verdict.contains("HTTP 500"), "{j:?}");
        let lost = FailingJudge(|| Error::DeviceLost("gone".into()));
        assert!(matches!(rt.block_on(judge_record(&lost, &rec, 0)), Err(Error::DeviceLost(_))));
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
