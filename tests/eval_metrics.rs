//! The evaluation core (issue 7) against hand-checked values: answer metrics, retrieval metrics, McNemar's exact
//! test, the bootstrap interval, the judge's A/B randomization and tie handling, and `summarize`.

use webvlm::eval::metrics::*;
use webvlm::eval::stats::*;
use webvlm::eval::{summarize, summarize_with, ArmRecord, EvalItem, EvalRecord, JudgeRecord, Summary, SummaryConfig};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

// ---------------------------------------------------------------- answer metrics

#[test]
fn normalization_is_squad_style() {
    // lower → "the cat's  hat!"; punctuation deleted (no space) → "the cats  hat"; article dropped; spaces collapsed.
    assert_eq!(normalize_answer("The Cat's  hat!"), "cats hat");
    // dots deleted without inserting spaces.
    assert_eq!(normalize_answer("A.B.C."), "abc");
    // only whole-word articles go: "theatre", "another", "ant" stay.
    assert_eq!(normalize_answer("the theatre, another ant"), "theatre another ant");
    // an answer that is only an article normalizes to nothing.
    assert_eq!(normalize_answer("  An "), "");
    // typographic quotes and dashes are punctuation too.
    assert_eq!(normalize_answer("\u{201C}Blue\u{201D}\u{2014}whale"), "bluewhale");
    assert_eq!(normalize_tokens("\tThe  quick\nfox "), vec!["quick", "fox"]);
}

#[test]
fn exact_and_alias_match() {
    assert!(exact_match("The Eiffel Tower.", "eiffel tower"));
    assert!(!exact_match("Eiffel", "eiffel tower"));
    // alias match: any gold answer.
    assert!(alias_match("NYC", &["New York City", "nyc"]));
    assert!(!alias_match("New York", &["New York City", "nyc"]));
    assert!(!alias_match("anything", &[] as &[&str]));
}

#[test]
fn token_f1_hand_checked() {
    // pred [quick brown fox], gold [quick fox jumps]: 2 common, P = R = 2/3 → F1 = 2/3.
    assert!(close(token_f1("the quick brown fox", "a quick fox jumps"), 2.0 / 3.0));
    // multiset overlap: pred [red red red], gold [red]: 1 common, P = 1/3, R = 1 → F1 = 2·(1/3)/(4/3) = 1/2.
    assert!(close(token_f1("red red red", "red"), 0.5));
    // no overlap → 0.
    assert_eq!(token_f1("lyon", "paris"), 0.0);
    // both normalize to nothing → 1; one side empty → 0.
    assert_eq!(token_f1("the", "a"), 1.0);
    assert_eq!(token_f1("", "paris"), 0.0);
    // max over golds: vs "paris": P = 1/2, R = 1 → 2/3; vs "lyon": 0 → max 2/3.
    assert!(close(max_token_f1("Paris, France", &["paris", "lyon"]), 2.0 / 3.0));
    assert_eq!(max_token_f1("x", &[] as &[&str]), 0.0);
}

// ---------------------------------------------------------------- retrieval metrics

#[test]
fn recall_at_k_and_reciprocal_rank() {
    let ranked = ["d3", "d1", "d7", "d2"];
    let gold = ["d1", "d2"];
    // top 2 = {d3, d1}: 1 of 2 gold → 0.5; top 4 holds both → 1; k beyond the list → 1; k = 0 → 0.
    assert_eq!(recall_at_k(&ranked, &gold, 2), Some(0.5));
    assert_eq!(recall_at_k(&ranked, &gold, 4), Some(1.0));
    assert_eq!(recall_at_k(&ranked, &gold, 10), Some(1.0));
    assert_eq!(recall_at_k(&ranked, &gold, 0), Some(0.0));
    // duplicate gold ids count once.
    assert_eq!(recall_at_k(&ranked, &["d1", "d1"], 2), Some(1.0));
    // no gold → the item does not count.
    assert_eq!(recall_at_k(&ranked, &[] as &[&str], 2), None);
    // first gold (d1) at rank 2 → 1/2; none retrieved → 0; no gold → None.
    assert_eq!(reciprocal_rank(&ranked, &gold), Some(0.5));
    assert_eq!(reciprocal_rank(&ranked, &["d9"]), Some(0.0));
    assert_eq!(reciprocal_rank(&[] as &[&str], &["d9"]), Some(0.0));
    assert_eq!(reciprocal_rank(&ranked, &[] as &[&str]), None);
}

// ---------------------------------------------------------------- McNemar, relative gain

#[test]
fn mcnemar_exact_known_values() {
    // n = 10, P[X ≤ 1] = (C(10,0) + C(10,1)) / 2^10 = 11/1024 → p = 22/1024 = 0.021484375.
    assert!((mcnemar_exact(1, 9) - 0.021484375).abs() < 1e-15);
    assert!((mcnemar_exact(9, 1) - 0.021484375).abs() < 1e-15);
    // n = 5, P[X ≤ 0] = 1/32 → p = 1/16.
    assert!((mcnemar_exact(0, 5) - 0.0625).abs() < 1e-15);
    // n = 10, P[X ≤ 2] = (1 + 10 + 45)/1024 → p = 112/1024 = 0.109375.
    assert!((mcnemar_exact(2, 8) - 0.109375).abs() < 1e-15);
    // n = 20, P[X ≤ 5] = (1 + 20 + 190 + 1140 + 4845 + 15504)/2^20 = 21700/2^20 → p = 43400/1048576.
    assert!((mcnemar_exact(5, 15) - 43400.0 / 1048576.0).abs() < 1e-14);
    // b = c → 1; no discordant pairs → 1; n = 3, P[X ≤ 1] = 4/8 → min(1, 1) = 1.
    assert_eq!(mcnemar_exact(4, 4), 1.0);
    assert_eq!(mcnemar_exact(0, 0), 1.0);
    assert_eq!(mcnemar_exact(1, 2), 1.0);
    assert_eq!(mcnemar_exact(1000, 1000), 1.0);
}

#[test]
fn mcnemar_is_stable_for_large_counts() {
    // 2^-1000 overflows nothing in log space; a naive C(1000, k) would be inf.
    let p = mcnemar_exact(400, 600);
    assert!(p.is_finite() && p > 0.0 && p < 1e-8, "{p}");
    let q = mcnemar_exact(4900, 5100);
    assert!(q.is_finite() && q > 0.04 && q < 0.06, "{q}"); // z ≈ 200/√10000 = 2 → p ≈ 0.046
                                                           // more lopsided → smaller p.
    assert!(mcnemar_exact(10, 30) < mcnemar_exact(15, 25));
    // an astronomically small tail underflows to 0, never NaN.
    assert!(!mcnemar_exact(0, 5000).is_nan());
}

#[test]
fn relative_gain_values() {
    assert!(close(relative_gain(0.6, 0.5).unwrap(), 0.2));
    assert!(close(relative_gain(0.4, 0.5).unwrap(), -0.2));
    assert_eq!(relative_gain(0.4, 0.0), None);
}

// ---------------------------------------------------------------- win rate, bootstrap

fn outcomes(wins: usize, ties: usize, losses: usize) -> Vec<Outcome> {
    let mut v = vec![Outcome::VlmWin; wins];
    v.extend(vec![Outcome::Tie; ties]);
    v.extend(vec![Outcome::LegacyWin; losses]);
    v
}

#[test]
fn win_rate_counts_ties_as_half() {
    // (6 + 2/2) / 10 = 0.7.
    assert!(close(win_rate(&outcomes(6, 2, 2)).unwrap(), 0.7));
    assert!(close(win_rate(&outcomes(0, 4, 0)).unwrap(), 0.5));
    assert!(close(win_rate(&outcomes(1, 0, 1)).unwrap(), 0.5));
    assert_eq!(win_rate(&[]), None);
}

#[test]
fn bootstrap_interval_contains_the_estimate_and_is_deterministic() {
    let o = outcomes(6, 2, 2);
    let (lo, hi) = bootstrap_win_rate_ci(&o, 2000, 7).unwrap();
    assert!((0.0..=0.7).contains(&lo) && (0.7..=1.0).contains(&hi), "({lo}, {hi})");
    // scores have sd 0.4, n = 10 → SE ≈ 0.126, so the interval is roughly 0.7 ± 0.25.
    assert!(lo < 0.6 && hi > 0.8, "({lo}, {hi})");
    assert_eq!(bootstrap_win_rate_ci(&o, 2000, 7), Some((lo, hi)));
    // more items → narrower: n = 1000 → SE ≈ 0.0126, width ≈ 0.05.
    let big = outcomes(600, 200, 200);
    let (blo, bhi) = bootstrap_win_rate_ci(&big, 2000, 7).unwrap();
    assert!(blo <= 0.7 && 0.7 <= bhi && bhi - blo < 0.1, "({blo}, {bhi})");
    // no variance → a point; nothing to resample → None.
    assert_eq!(bootstrap_win_rate_ci(&outcomes(0, 5, 0), 500, 1), Some((0.5, 0.5)));
    assert_eq!(bootstrap_win_rate_ci(&[], 500, 1), None);
    assert_eq!(bootstrap_win_rate_ci(&o, 0, 1), None);
}

// ---------------------------------------------------------------- judge A/B order, verdicts

/// The Wilson score interval against scipy 1.17 (`binomtest(k, n).proportion_ci(0.95, method='wilson')`), and
/// where the bootstrap collapsed: 4 wins of 4 gave 100–100 %.
#[test]
fn wilson_interval_matches_scipy() {
    for (k, n, lo, hi) in [
        (4usize, 4usize, 0.5101091635454027, 1.0),
        (0, 18, 0.0, 0.17587922364665765),
        (3, 6, 0.18761630648265054, 0.8123836935173494),
        (1, 1, 0.20654931437723745, 1.0),
    ] {
        let (l, h) = wilson_interval(k as f64 / n as f64, n).unwrap();
        assert!((l - lo).abs() < 1e-12 && (h - hi).abs() < 1e-12, "{k}/{n}: {l} {h}");
    }
    assert_eq!(wilson_interval(0.5, 0), None);
    assert_eq!(bootstrap_win_rate_ci(&outcomes(4, 0, 0), 500, 1), Some((1.0, 1.0)));
}

#[test]
fn ab_randomization_is_deterministic_and_balanced() {
    let ids: Vec<String> = (0..1000).map(|i| format!("item-{i:04}")).collect();
    let a: Vec<bool> = ids.iter().map(|id| judge_swapped(id, 42)).collect();
    let b: Vec<bool> = ids.iter().map(|id| judge_swapped(id, 42)).collect();
    assert_eq!(a, b);
    let swapped = a.iter().filter(|&&s| s).count();
    // Bin(1000, 1/2) has sd ≈ 15.8; ±50 is over 3 sd.
    assert!((450..=550).contains(&swapped), "{swapped}");
    // another seed gives another assignment (about half the items change).
    let other = ids.iter().zip(&a).filter(|(id, &s)| judge_swapped(id, 43) != s).count();
    assert!((400..=600).contains(&other), "{other}");
}

#[test]
fn verdicts_map_back_to_the_arms() {
    // unswapped: A = vlm, B = legacy; swapped: A = legacy, B = vlm.
    assert_eq!(verdict_to_outcome("A", false), Some(Outcome::VlmWin));
    assert_eq!(verdict_to_outcome("B", false), Some(Outcome::LegacyWin));
    assert_eq!(verdict_to_outcome("A", true), Some(Outcome::LegacyWin));
    assert_eq!(verdict_to_outcome("B", true), Some(Outcome::VlmWin));
    // ties are ties whatever the order; tolerant of case, quotes and a period.
    for s in ["tie", "TIE", " Tie. ", "\"tie\""] {
        assert_eq!(verdict_to_outcome(s, false), Some(Outcome::Tie), "{s}");
        assert_eq!(verdict_to_outcome(s, true), Some(Outcome::Tie), "{s}");
    }
    assert_eq!(verdict_to_outcome("b.", true), Some(Outcome::VlmWin));
    assert_eq!(verdict_to_outcome("both", false), None);
    assert_eq!(verdict_to_outcome("", false), None);
}

#[test]
fn randomization_cancels_a_position_biased_judge() {
    let ids: Vec<String> = (0..1000).map(|i| format!("q{i}")).collect();
    // a judge that always says "A" favours whichever arm was shown first: ~half vlm, ~half legacy.
    let biased: Vec<Outcome> = ids.iter().map(|id| verdict_to_outcome("A", judge_swapped(id, 0)).unwrap()).collect();
    let wr = win_rate(&biased).unwrap();
    assert!((0.45..=0.55).contains(&wr), "{wr}");
    // a judge that always picks the vlm answer, wherever it was shown, gives win rate 1.
    let fair: Vec<Outcome> = ids
        .iter()
        .map(|id| {
            let swapped = judge_swapped(id, 0);
            verdict_to_outcome(if swapped { "B" } else { "A" }, swapped).unwrap()
        })
        .collect();
    assert_eq!(win_rate(&fair), Some(1.0));
}

// ---------------------------------------------------------------- records, summarize

fn arm(answer: &str, ids: &[&str], ms: f64) -> ArmRecord {
    ArmRecord {
        query: format!("query for {answer}"),
        retrieved_ids: ids.iter().map(|s| s.to_string()).collect(),
        answer: answer.into(),
        ms,
        errors: vec![],
    }
}

fn record(
    id: &str,
    answers: &[&str],
    gold: &[&str],
    legacy: ArmRecord,
    vlm: ArmRecord,
    judge: Option<(bool, &str)>,
) -> EvalRecord {
    EvalRecord {
        id: id.into(),
        image: format!("{id}.png"),
        question: format!("question {id}"),
        answers: answers.iter().map(|s| s.to_string()).collect(),
        gold_doc_ids: gold.iter().map(|s| s.to_string()).collect(),
        legacy,
        vlm,
        judge: judge.map(|(swapped, v)| JudgeRecord { swapped, verdict: v.into(), rationale: None }),
    }
}

fn synthetic() -> Vec<EvalRecord> {
    vec![
        // legacy: EM 0, alias 0, F1 0, R@2 1 (d1 in [d2, d1]), RR 1/2.  vlm: "the paris!" → "paris": EM 1, F1 1, R 1, RR 1.
        // judge: unswapped, "A" → vlm win.
        record(
            "r1",
            &["Paris", "paris france"],
            &["d1"],
            arm("Lyon", &["d2", "d1"], 100.0),
            arm("The Paris!", &["d1", "d2"], 150.0),
            Some((false, "A")),
        ),
        // legacy: EM 1, F1 1, R 1, RR 1.  vlm: EM 0, F1 0, R@2 0 (d5 at rank 3), RR 1/3.  judge: swapped, "A" → legacy win.
        record(
            "r2",
            &["42"],
            &["d5"],
            arm("42", &["d5"], 200.0),
            arm("forty two", &["d9", "d8", "d5"], 250.0),
            Some((true, "A")),
        ),
        // no gold docs (retrieval metrics skip it). legacy "whale" vs "blue whale": P 1, R 1/2 → F1 2/3, EM 0.
        // vlm "a blue whale" → EM 1, F1 1.  judge: tie.
        record(
            "r3",
            &["blue whale"],
            &[],
            arm("whale", &[], 300.0),
            arm("a blue whale", &["x"], 350.0),
            Some((true, "tie")),
        ),
        // both answer the alias "crimson": EM (vs canonical "red") 0, alias 1, F1 1, R 1, RR 1. judge verdict invalid.
        record(
            "r4",
            &["red", "crimson"],
            &["d7"],
            arm("crimson", &["d7"], 400.0),
            arm("Crimson", &["d7"], 450.0),
            Some((false, "maybe")),
        ),
    ]
}

#[test]
fn summarize_synthetic_set() {
    let s = summarize_with(&synthetic(), &SummaryConfig { k: 2, seed: 3 });
    assert_eq!((s.n, s.k), (4, 2));
    // legacy: EM [0,1,0,0] = 1/4; alias [0,1,0,1] = 1/2; F1 (0 + 1 + 2/3 + 1)/4 = 2/3;
    // R@2 over r1, r2, r4 = (1 + 1 + 1)/3 = 1; MRR (1/2 + 1 + 1)/3 = 5/6; ms mean 250.
    let l = &s.legacy;
    assert!(close(l.exact_match, 0.25) && close(l.alias_match, 0.5) && close(l.token_f1, 2.0 / 3.0));
    assert!(close(l.recall_at_k.unwrap(), 1.0) && close(l.mrr.unwrap(), 5.0 / 6.0) && close(l.mean_ms, 250.0));
    // vlm: EM [1,0,1,0] = 1/2; alias [1,0,1,1] = 3/4; F1 (1 + 0 + 1 + 1)/4 = 3/4;
    // R@2 (1 + 0 + 1)/3 = 2/3; MRR (1 + 1/3 + 1)/3 = 7/9; ms mean 300.
    let v = &s.vlm;
    assert!(close(v.exact_match, 0.5) && close(v.alias_match, 0.75) && close(v.token_f1, 0.75));
    assert!(close(v.recall_at_k.unwrap(), 2.0 / 3.0) && close(v.mrr.unwrap(), 7.0 / 9.0) && close(v.mean_ms, 300.0));
    // discordant EM: legacy only r2 (b = 1), vlm only r1, r3 (c = 2); n = 3, 2·P[X ≤ 1] = 2·4/8 → 1.
    assert_eq!((s.mcnemar_exact_match.legacy_only, s.mcnemar_exact_match.vlm_only), (1, 2));
    assert_eq!(s.mcnemar_exact_match.p_value, 1.0);
    // gains: EM (1/2 − 1/4)/(1/4) = 1; alias (3/4 − 1/2)/(1/2) = 1/2; F1 (3/4 − 2/3)/(2/3) = 1/8;
    // R@2 (2/3 − 1)/1 = −1/3; MRR (7/9 − 5/6)/(5/6) = −1/15.
    let g = &s.relative_gain;
    assert!(
        close(g.exact_match.unwrap(), 1.0) && close(g.alias_match.unwrap(), 0.5) && close(g.token_f1.unwrap(), 0.125)
    );
    assert!(close(g.recall_at_k.unwrap(), -1.0 / 3.0) && close(g.mrr.unwrap(), -1.0 / 15.0));
    // judge: r1 vlm win, r2 legacy win, r3 tie, r4 invalid → (1 + 1/2)/3 = 1/2.
    let sbs = s.sbs.as_ref().unwrap();
    assert_eq!((sbs.judged, sbs.invalid, sbs.vlm_wins, sbs.legacy_wins, sbs.ties), (3, 1, 1, 1, 1));
    assert!(close(sbs.win_rate, 0.5));
    assert!(sbs.ci_low <= 0.5 && 0.5 <= sbs.ci_high && sbs.ci_low >= 0.0 && sbs.ci_high <= 1.0);
    assert_eq!(sbs.seed, 3);
    // Wilson, 1.5 of 3: scipy 1.17 binomtest(k, 3).proportion_ci(method='wilson') has no half successes; the
    // formula's centre is 1/2 by symmetry, and the interval is wider than the bootstrap's could be
    assert!(close(sbs.ci_low + sbs.ci_high, 1.0) && sbs.ci_low < 0.15, "{sbs:?}");
    // deterministic.
    assert_eq!(s, summarize_with(&synthetic(), &SummaryConfig { k: 2, seed: 3 }));

    // JSON: round-trips and has the documented shape.
    let json = s.to_json_pretty();
    let back: Summary = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["vlm"]["exact_match"], 0.5);
    assert_eq!(v["sbs"]["ties"], 1);
    assert_eq!(v["mcnemar_exact_match"]["p_value"], 1.0);
}

/// Items without gold answers (perception-only) are left out of the answer metrics' means, as items without
/// gold documents are of the retrieval metrics (they halved exact match on a set with as many of them).
#[test]
fn answer_metrics_skip_items_without_answers() {
    let mut records = synthetic();
    let mut bare = records[0].clone();
    bare.id = "r5".into();
    bare.answers.clear();
    records.push(bare);
    let s = summarize_with(&records, &SummaryConfig { k: 2, seed: 3 });
    let t = summarize_with(&synthetic(), &SummaryConfig { k: 2, seed: 3 });
    assert_eq!((s.n, s.vlm.answerable, t.vlm.answerable), (5, 4, 4));
    assert!(close(s.vlm.exact_match, t.vlm.exact_match) && close(s.legacy.token_f1, t.legacy.token_f1));
    assert!(close(s.vlm.alias_match, 0.75));
}

#[test]
fn summarize_edge_cases() {
    // default config: k = 5 (the pipeline's top_k).
    let s = summarize(&synthetic());
    assert_eq!(s.k, 5);
    // at k = 5 the vlm arm finds d5 in r2 → R@5 = 1.
    assert!(close(s.vlm.recall_at_k.unwrap(), 1.0));

    let empty = summarize(&[]);
    assert_eq!(empty.n, 0);
    assert_eq!(empty.sbs, None);
    assert_eq!(empty.legacy.recall_at_k, None);
    assert_eq!(empty.relative_gain.exact_match, None); // legacy 0 → no gain
    assert_eq!(empty.mcnemar_exact_match.p_value, 1.0);

    // no judge records → no sbs section, serialized as null.
    let mut unjudged = synthetic();
    unjudged.iter_mut().for_each(|r| r.judge = None);
    let s = summarize(&unjudged);
    assert_eq!(s.sbs, None);
    let v: serde_json::Value = serde_json::from_str(&s.to_json_pretty()).unwrap();
    assert!(v["sbs"].is_null());
}

/// Items on which an arm's step failed are counted per arm (they stay in the means, and the report says so
/// beside them); records without the field (older files) parse as having none.
#[test]
fn failed_steps_are_counted_and_reported() {
    let mut records = synthetic();
    records[0].vlm.errors = vec!["retrieve: timed out after 500 ms".into()];
    records[1].vlm.errors = vec!["rephrase: <b>boom</b>".into()];
    let s = summarize(&records);
    assert_eq!((s.legacy.failed_items, s.vlm.failed_items), (0, 2));
    let html = webvlm::eval::report::html(&s, &records, &Default::default(), &|_| None);
    assert!(html.contains("VLM arm: 2"), "the report states the failures");
    assert!(html.contains("failed: rephrase: &lt;b&gt;boom&lt;/b&gt;") && !html.contains("<b>boom"));
    assert_eq!(summarize(&synthetic()).vlm.failed_items, 0);
    let old = r#"{"query":"q","retrieved_ids":[],"answer":"a","ms":1}"#;
    assert!(serde_json::from_str::<ArmRecord>(old).unwrap().errors.is_empty());
}

#[test]
fn jsonl_formats_parse() {
    let item: EvalItem = serde_json::from_str(
        r#"{"id":"e1","image":"img/e1.png","question":"What is this?","answers":["a zorblat"],"gold_doc_ids":["doc-17"]}"#,
    )
    .unwrap();
    assert_eq!(item.answers, vec!["a zorblat"]);
    assert_eq!(item.gold_doc_ids, vec!["doc-17"]);
    // answers and gold ids may be absent (a perception-only item without a corpus).
    let bare: EvalItem = serde_json::from_str(r#"{"id":"e2","image":"x.png","question":"q"}"#).unwrap();
    assert!(bare.answers.is_empty() && bare.gold_doc_ids.is_empty());

    let line = r#"{"id":"e1","question":"q","answers":["x"],"gold_doc_ids":["d"],
        "legacy":{"query":"lq","retrieved_ids":["d"],"answer":"x","ms":12.5},
        "vlm":{"query":"vq","retrieved_ids":[],"answer":"y","ms":30},
        "judge":{"swapped":true,"verdict":"B","rationale":"more complete"}}"#;
    let r: EvalRecord = serde_json::from_str(line).unwrap();
    assert_eq!(r.judge.as_ref().unwrap().outcome(), Some(Outcome::VlmWin));
    assert_eq!(r.vlm.ms, 30.0);
    // a record without a judge parses, and records round-trip.
    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
    v.as_object_mut().unwrap().remove("judge");
    let no_judge: EvalRecord = serde_json::from_value(v).unwrap();
    assert_eq!(no_judge.judge, None);
    let again: EvalRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(again, r);
}
