//! Side-by-side evaluation of the VLM-rephraser pipeline arm against the legacy text-only arm (issue 7): the
//! item and record formats (JSONL, serde), per-item scoring and [`summarize`] into a JSON [`Summary`] of
//! per-arm metrics, McNemar's exact test on exact match, relative gains and the judge's win rate with a Wilson
//! score interval. CPU-only and I/O-free; running the arms, judging and the HTML report live elsewhere.

pub mod metrics;
pub mod report;
pub mod run;
pub mod stats;

use serde::{Deserialize, Serialize};

pub use stats::{Outcome, Verdict};

/// One benchmark item (a JSONL line of the input).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalItem {
    pub id: String,
    /// Path or URL (or data URL) of the image.
    pub image: String,
    pub question: String,
    /// Gold answers; the first is canonical (exact match), all are aliases (alias match, max token F1).
    #[serde(default)]
    pub answers: Vec<String>,
    /// Ids of the corpus documents that hold the answer.
    #[serde(default)]
    pub gold_doc_ids: Vec<String>,
    /// Tags from an external tagger, for the legacy rephraser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Text in the image (from an external OCR), for the legacy rephraser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr_text: Option<String>,
    /// Free-form labels of the item (benchmark condition, split), copied to the records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// What one pipeline arm produced for one item.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmRecord {
    /// The rephrased search query.
    pub query: String,
    /// Retrieved document ids, best first.
    pub retrieved_ids: Vec<String>,
    pub answer: String,
    /// Wall time of the arm for this item, milliseconds.
    pub ms: f64,
    /// The steps that failed on this item (`"step: error"`, from the pipeline's trace): a retrieval that timed
    /// out scores as a miss, a rephraser that failed searched with the raw question, a remote generator that
    /// failed was replaced by the local model. Empty when every step ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The side-by-side judge's decision for one item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JudgeRecord {
    /// Whether A was the legacy answer (see [`stats::judge_swapped`]).
    pub swapped: bool,
    /// The judge's raw verdict: "A" | "B" | "tie" (anything else counts as invalid).
    pub verdict: String,
    /// The judge's explanation, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
}

impl JudgeRecord {
    /// The verdict mapped back to the arms; `None` when the verdict is not A, B or tie.
    pub fn outcome(&self) -> Option<Outcome> {
        stats::verdict_to_outcome(&self.verdict, self.swapped)
    }
}

/// One output JSONL line: both arms on one item. The gold answers and document ids are copied from the item so
/// that a records file can be summarized on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub id: String,
    #[serde(default)]
    pub image: String,
    pub question: String,
    #[serde(default)]
    pub answers: Vec<String>,
    #[serde(default)]
    pub gold_doc_ids: Vec<String>,
    pub legacy: ArmRecord,
    pub vlm: ArmRecord,
    #[serde(default)]
    pub judge: Option<JudgeRecord>,
}

/// Per-item scores of one arm.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmScores {
    /// Whether the item has gold answers: the answer metrics (exact / alias match, F1) are averaged over those
    /// items only, as retrieval metrics are over the items with gold documents.
    pub answerable: bool,
    pub exact_match: bool,
    pub alias_match: bool,
    pub token_f1: f64,
    /// `None` when the item has no gold documents.
    pub recall_at_k: Option<f64>,
    pub reciprocal_rank: Option<f64>,
}

/// Scores one arm's output against the gold answers and documents.
pub fn score_arm(arm: &ArmRecord, answers: &[String], gold_doc_ids: &[String], k: usize) -> ArmScores {
    ArmScores {
        answerable: !answers.is_empty(),
        exact_match: answers.first().is_some_and(|a| metrics::exact_match(&arm.answer, a)),
        alias_match: metrics::alias_match(&arm.answer, answers),
        token_f1: metrics::max_token_f1(&arm.answer, answers),
        recall_at_k: metrics::recall_at_k(&arm.retrieved_ids, gold_doc_ids, k),
        reciprocal_rank: metrics::reciprocal_rank(&arm.retrieved_ids, gold_doc_ids),
    }
}

impl EvalRecord {
    /// (legacy, vlm) scores.
    pub fn scores(&self, k: usize) -> (ArmScores, ArmScores) {
        (
            score_arm(&self.legacy, &self.answers, &self.gold_doc_ids, k),
            score_arm(&self.vlm, &self.answers, &self.gold_doc_ids, k),
        )
    }

    /// How much the arms disagree on this item (for picking the items a report shows): |ΔF1| + |ΔRR| + |ΔEM|,
    /// plus 1 when the judge preferred one arm.
    pub fn disagreement(&self, k: usize) -> f64 {
        let (l, v) = self.scores(k);
        let rr = (l.reciprocal_rank.unwrap_or(0.0) - v.reciprocal_rank.unwrap_or(0.0)).abs();
        let em = (l.exact_match as u8 as f64 - v.exact_match as u8 as f64).abs();
        let judged = match self.judge.as_ref().and_then(|j| j.outcome()) {
            Some(Outcome::VlmWin | Outcome::LegacyWin) => 1.0,
            _ => 0.0,
        };
        (l.token_f1 - v.token_f1).abs() + rr + em + judged
    }
}

/// How [`summarize_with`] computes the summary.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryConfig {
    /// The k of Recall@k.
    pub k: usize,
    /// The seed of the judge's A/B order ([`stats::judge_swapped`]), recorded in the summary.
    pub seed: u64,
}

impl Default for SummaryConfig {
    fn default() -> Self {
        // k = the pipeline's default top_k.
        SummaryConfig { k: 5, seed: 0 }
    }
}

/// Means of one arm's per-item scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    pub n: usize,
    /// Items with gold answers (the denominator of exact / alias match and token F1).
    #[serde(default)]
    pub answerable: usize,
    pub exact_match: f64,
    pub alias_match: f64,
    pub token_f1: f64,
    /// Mean over the items with gold documents; `None` when none has any.
    pub recall_at_k: Option<f64>,
    pub mrr: Option<f64>,
    pub mean_ms: f64,
    /// Items on which a step of this arm failed (their scores are in the means: see [`ArmRecord::errors`]).
    #[serde(default)]
    pub failed_items: usize,
}

/// McNemar's exact test on paired exact match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct McNemar {
    /// Items the legacy arm got right and the VLM arm wrong.
    pub legacy_only: u64,
    /// Items the VLM arm got right and the legacy arm wrong.
    pub vlm_only: u64,
    pub p_value: f64,
}

/// Relative gains (vlm − legacy) / legacy per metric; `None` where the legacy value is 0 or missing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gains {
    pub exact_match: Option<f64>,
    pub alias_match: Option<f64>,
    pub token_f1: Option<f64>,
    pub recall_at_k: Option<f64>,
    pub mrr: Option<f64>,
}

/// The side-by-side judge's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SbsSummary {
    /// Items with a valid verdict.
    pub judged: usize,
    /// Items with a judge record whose verdict was not A, B or tie (left out of the counts).
    pub invalid: usize,
    pub vlm_wins: usize,
    pub legacy_wins: usize,
    pub ties: usize,
    /// (wins + ties / 2) / judged.
    pub win_rate: f64,
    /// Wilson score 95% interval of the win rate ([`stats::wilson_interval`]; a percentile bootstrap, used
    /// before, collapsed to a point for small or unanimous samples).
    pub ci_low: f64,
    pub ci_high: f64,
    /// The seed of the A/B order the judge saw.
    pub seed: u64,
}

/// The summary of an evaluation run (serialized as the summary JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub k: usize,
    pub legacy: ArmSummary,
    pub vlm: ArmSummary,
    pub mcnemar_exact_match: McNemar,
    pub relative_gain: Gains,
    /// `None` when no item was judged.
    pub sbs: Option<SbsSummary>,
}

impl Summary {
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("summary serializes")
    }
}

fn arm_summary<'a>(scores: &[ArmScores], arms: impl Iterator<Item = &'a ArmRecord> + Clone) -> ArmSummary {
    // answer metrics over the items with gold answers (an item without any cannot be answered right)
    let answerable = || scores.iter().filter(|s| s.answerable);
    let frac = |f: fn(&ArmScores) -> bool| metrics::mean(answerable().map(|s| f(s) as u8 as f64)).unwrap_or(0.0);
    ArmSummary {
        n: scores.len(),
        answerable: answerable().count(),
        exact_match: frac(|s| s.exact_match),
        alias_match: frac(|s| s.alias_match),
        token_f1: metrics::mean(answerable().map(|s| s.token_f1)).unwrap_or(0.0),
        recall_at_k: metrics::mean(scores.iter().filter_map(|s| s.recall_at_k)),
        mrr: metrics::mean(scores.iter().filter_map(|s| s.reciprocal_rank)),
        mean_ms: metrics::mean(arms.clone().map(|a| a.ms)).unwrap_or(0.0),
        failed_items: arms.filter(|a| !a.errors.is_empty()).count(),
    }
}

/// [`summarize_with`] with [`SummaryConfig::default`] (k = 5, 2000 resamples, seed 0).
pub fn summarize(records: &[EvalRecord]) -> Summary {
    summarize_with(records, &SummaryConfig::default())
}

/// Summarizes the records: per-arm means, McNemar on exact match, relative gains and the judge's win rate.
pub fn summarize_with(records: &[EvalRecord], config: &SummaryConfig) -> Summary {
    let (legacy, vlm): (Vec<ArmScores>, Vec<ArmScores>) = records.iter().map(|r| r.scores(config.k)).unzip();
    let legacy_sum = arm_summary(&legacy, records.iter().map(|r| &r.legacy));
    let vlm_sum = arm_summary(&vlm, records.iter().map(|r| &r.vlm));

    let legacy_only = legacy.iter().zip(&vlm).filter(|(l, v)| l.exact_match && !v.exact_match).count() as u64;
    let vlm_only = legacy.iter().zip(&vlm).filter(|(l, v)| !l.exact_match && v.exact_match).count() as u64;

    let gain = |v: Option<f64>, l: Option<f64>| match (v, l) {
        (Some(v), Some(l)) => stats::relative_gain(v, l),
        _ => None,
    };
    let relative_gain = Gains {
        exact_match: stats::relative_gain(vlm_sum.exact_match, legacy_sum.exact_match),
        alias_match: stats::relative_gain(vlm_sum.alias_match, legacy_sum.alias_match),
        token_f1: stats::relative_gain(vlm_sum.token_f1, legacy_sum.token_f1),
        recall_at_k: gain(vlm_sum.recall_at_k, legacy_sum.recall_at_k),
        mrr: gain(vlm_sum.mrr, legacy_sum.mrr),
    };

    let judged: Vec<&JudgeRecord> = records.iter().filter_map(|r| r.judge.as_ref()).collect();
    let outcomes: Vec<Outcome> = judged.iter().filter_map(|j| j.outcome()).collect();
    let sbs = stats::win_rate(&outcomes).map(|win_rate| {
        let (ci_low, ci_high) = stats::wilson_interval(win_rate, outcomes.len()).unwrap_or((win_rate, win_rate));
        let count = |o: Outcome| outcomes.iter().filter(|&&x| x == o).count();
        SbsSummary {
            judged: outcomes.len(),
            invalid: judged.len() - outcomes.len(),
            vlm_wins: count(Outcome::VlmWin),
            legacy_wins: count(Outcome::LegacyWin),
            ties: count(Outcome::Tie),
            win_rate,
            ci_low,
            ci_high,
            seed: config.seed,
        }
    });

    Summary {
        n: records.len(),
        k: config.k,
        legacy: legacy_sum,
        vlm: vlm_sum,
        mcnemar_exact_match: McNemar { legacy_only, vlm_only, p_value: stats::mcnemar_exact(legacy_only, vlm_only) },
        relative_gain,
        sbs,
    }
}
