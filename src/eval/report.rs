//! The evaluation report: one self-contained HTML page (inline CSS and SVG, images as data URLs, no script) that
//! a person reads at a glance — per-arm metrics with 95% bootstrap intervals, the judge's win/tie/loss bar with
//! its interval, McNemar's test, and the items where the arms disagree most. Every piece of text from the run
//! (questions, answers, queries, ids, rationales) is HTML-escaped: model output is untrusted.

use super::{metrics, ArmScores, EvalRecord, Summary};
use crate::testing::Rng;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percentile-bootstrap 95% interval of the mean of `values` (seeded; `None` for no values).
pub fn bootstrap_mean_ci(values: &[f64], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut rng = Rng::new(seed ^ 0x5EED_B007);
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| (0..n).map(|_| values[(rng.next_u64() % n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| means[((q * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    Some((at(0.025), at(0.975)))
}

/// What the report says about the run besides the records.
#[derive(Default)]
pub struct ReportMeta {
    pub title: String,
    /// (label, value) lines: model, corpus, retrieval, judge, command, …
    pub facts: Vec<(String, String)>,
}

struct MetricRow {
    name: &'static str,
    legacy: Vec<f64>,
    vlm: Vec<f64>,
}

fn metric_rows(records: &[EvalRecord], k: usize) -> Vec<MetricRow> {
    let scores: Vec<(ArmScores, ArmScores)> = records.iter().map(|r| r.scores(k)).collect();
    let col = |f: &dyn Fn(&ArmScores) -> Option<f64>| -> (Vec<f64>, Vec<f64>) {
        (scores.iter().filter_map(|(l, _)| f(l)).collect(), scores.iter().filter_map(|(_, v)| f(v)).collect())
    };
    let mut rows = Vec::new();
    let mut push = |name, (legacy, vlm): (Vec<f64>, Vec<f64>)| {
        if !legacy.is_empty() {
            rows.push(MetricRow { name, legacy, vlm })
        }
    };
    push("exact match", col(&|s| s.answerable.then_some(s.exact_match as u8 as f64)));
    push("alias match", col(&|s| s.answerable.then_some(s.alias_match as u8 as f64)));
    push("token F1", col(&|s| s.answerable.then_some(s.token_f1)));
    push("Recall@k", col(&|s| s.recall_at_k));
    push("MRR", col(&|s| s.reciprocal_rank));
    rows
}

const LEGACY_COLOR: &str = "#8a8f98";
const VLM_COLOR: &str = "#2f6fdb";

/// An SVG chart: for each metric, a legacy bar and a VLM bar (0..1) with their 95% intervals as whiskers.
fn metrics_svg(rows: &[MetricRow], seed: u64) -> String {
    let (w, label_w, bar_h, gap) = (560.0, 110.0, 14.0, 12.0);
    let plot_w = w - label_w - 60.0;
    let h = rows.len() as f64 * (2.0 * bar_h + gap) + 24.0;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' role='img' aria-label='per-arm metrics'>"
    );
    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = label_w + t * plot_w;
        s += &format!("<line x1='{x}' y1='0' x2='{x}' y2='{}' stroke='#e3e5e8'/>", h - 18.0);
        s += &format!("<text x='{x}' y='{}' font-size='10' text-anchor='middle' fill='#666'>{t}</text>", h - 6.0);
    }
    for (i, r) in rows.iter().enumerate() {
        let y0 = i as f64 * (2.0 * bar_h + gap);
        s += &format!("<text x='0' y='{}' font-size='12' fill='#222'>{}</text>", y0 + bar_h + 4.0, escape(r.name));
        for (j, (vals, color)) in [(&r.legacy, LEGACY_COLOR), (&r.vlm, VLM_COLOR)].into_iter().enumerate() {
            let m = metrics::mean(vals.iter().copied()).unwrap_or(0.0);
            let (lo, hi) = bootstrap_mean_ci(vals, 1000, seed + i as u64).unwrap_or((m, m));
            let y = y0 + j as f64 * bar_h;
            s += &format!(
                "<rect x='{label_w}' y='{y}' width='{:.1}' height='{}' fill='{color}'/>",
                (m * plot_w).max(0.5),
                bar_h - 2.0
            );
            let (xl, xh, yc) = (label_w + lo * plot_w, label_w + hi * plot_w, y + (bar_h - 2.0) / 2.0);
            s += &format!("<line x1='{xl:.1}' y1='{yc}' x2='{xh:.1}' y2='{yc}' stroke='#111' stroke-width='1.5'/>");
            for x in [xl, xh] {
                s += &format!("<line x1='{x:.1}' y1='{}' x2='{x:.1}' y2='{}' stroke='#111'/>", yc - 3.0, yc + 3.0);
            }
            s += &format!(
                "<text x='{:.1}' y='{}' font-size='10' fill='#333'>{m:.3}</text>",
                label_w + plot_w + 6.0,
                y + bar_h - 4.0
            );
        }
    }
    s + "</svg>"
}

/// The win / tie / loss bar of the judge.
fn sbs_svg(wins: usize, ties: usize, losses: usize) -> String {
    let total = (wins + ties + losses).max(1) as f64;
    let w = 520.0;
    let mut x = 0.0;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='30' role='img' aria-label='judge outcomes'>"
    );
    for (n, color, label) in
        [(wins, VLM_COLOR, "VLM wins"), (ties, "#c9ccd1", "ties"), (losses, LEGACY_COLOR, "legacy wins")]
    {
        let bw = n as f64 / total * w;
        if n > 0 {
            s += &format!(
                "<rect x='{x:.1}' y='0' width='{bw:.1}' height='30' fill='{color}'><title>{label}: {n}</title></rect>"
            );
            if bw > 30.0 {
                s += &format!(
                    "<text x='{:.1}' y='19' font-size='12' fill='#fff' text-anchor='middle'>{n}</text>",
                    x + bw / 2.0
                );
            }
        }
        x += bw;
    }
    s + "</svg>"
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn opt_gain(g: Option<f64>) -> String {
    g.map(|g| format!("{:+.1}%", 100.0 * g)).unwrap_or_else(|| "n/a".into())
}

/// The report page. `image_src` maps an item's image reference to a data URL (or `None`: no thumbnail).
pub fn html(
    summary: &Summary,
    records: &[EvalRecord],
    meta: &ReportMeta,
    image_src: &dyn Fn(&str) -> Option<String>,
) -> String {
    let k = summary.k;
    let rows = metric_rows(records, k);
    let mut h = String::with_capacity(64 * 1024);
    h += "<!doctype html><html lang='en'><head><meta charset='utf-8'>";
    h += "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">";
    h += &format!("<title>{}</title>", escape(&meta.title));
    h += "<style>body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#1d2026;padding:0 16px}\
          h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}.facts{color:#555;font-size:12px}\
          .cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e3e5e8;border-radius:8px;padding:10px 14px;min-width:150px}\
          .card b{display:block;font-size:20px}.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}\
          table{border-collapse:collapse;width:100%;font-size:13px}td,th{border-top:1px solid #e3e5e8;padding:6px;vertical-align:top;text-align:left}\
          img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #ddd}\
          .q{font-weight:600}.muted{color:#666}.ok{color:#137333}.bad{color:#b3261e}code{font-size:12px}</style></head><body>";
    h += &format!("<h1>{}</h1>", escape(&meta.title));
    h += "<div class='facts'>";
    for (label, value) in &meta.facts {
        h += &format!("{}: <code>{}</code><br>", escape(label), escape(value));
    }
    h += "</div>";

    // headline cards
    h += "<div class='cards' style='margin-top:14px'>";
    h += &format!("<div class='card'>items<b>{}</b></div>", summary.n);
    h += &format!(
        "<div class='card'>exact match, legacy → VLM<b>{} → {}</b>relative gain {}</div>",
        pct(summary.legacy.exact_match),
        pct(summary.vlm.exact_match),
        opt_gain(summary.relative_gain.exact_match)
    );
    if let (Some(l), Some(v)) = (summary.legacy.recall_at_k, summary.vlm.recall_at_k) {
        h += &format!(
            "<div class='card'>Recall@{k}, legacy → VLM<b>{} → {}</b>relative gain {}</div>",
            pct(l),
            pct(v),
            opt_gain(summary.relative_gain.recall_at_k)
        );
    }
    if let Some(s) = &summary.sbs {
        h += &format!(
            "<div class='card'>judge: VLM win rate<b>{}</b>95% CI {} – {} ({} judged)</div>",
            pct(s.win_rate),
            pct(s.ci_low),
            pct(s.ci_high),
            s.judged
        );
    }
    let m = &summary.mcnemar_exact_match;
    h += &format!(
        "<div class='card'>McNemar (exact match)<b>p = {:.3}</b>VLM only {} · legacy only {}</div>",
        m.p_value, m.vlm_only, m.legacy_only
    );
    h += "</div>";
    let failed = [("legacy", summary.legacy.failed_items), ("VLM", summary.vlm.failed_items)];
    if failed.iter().any(|f| f.1 > 0) {
        h += &format!(
            "<p class='bad'>Steps failed on some items (legacy arm: {} items, VLM arm: {}): a failed retrieval scores              as a miss, a failed rephraser searched with the question; these items are in the means. Their errors are              in the records and in the table below.</p>",
            failed[0].1, failed[1].1
        );
    }

    h += &format!(
        "<h2>Metrics per arm <span class='legend'><span style='background:{LEGACY_COLOR}'></span>legacy (text-only rephraser)\
         <span style='background:{VLM_COLOR}'></span>VLM rephraser</span></h2>"
    );
    h += "<p class='muted'>Bars: means over the items; whiskers: 95% percentile-bootstrap intervals (1000 resamples).</p>";
    h += &metrics_svg(&rows, 7);

    if let Some(s) = &summary.sbs {
        h += "<h2>Side by side (judge)</h2>";
        h += &sbs_svg(s.vlm_wins, s.ties, s.legacy_wins);
        h += &format!(
            "<p>VLM wins {} · ties {} · legacy wins {} · invalid verdicts {} — win rate (wins + ties/2) {} \
             [{} – {}] (Wilson score 95% interval). A/B order randomized per item, seed {}.</p>",
            s.vlm_wins,
            s.ties,
            s.legacy_wins,
            s.invalid,
            pct(s.win_rate),
            pct(s.ci_low),
            pct(s.ci_high),
            s.seed
        );
    }

    // the items where the arms disagree most
    let mut order: Vec<usize> = (0..records.len()).collect();
    order.sort_by(|&a, &b| records[b].disagreement(k).total_cmp(&records[a].disagreement(k)).then(a.cmp(&b)));
    h += &format!("<h2>The {} items where the arms disagree most</h2>", order.len().min(10));
    h += "<table><tr><th>image</th><th>question · gold</th><th>legacy: query → answer</th><th>VLM: query → answer</th><th>judge</th></tr>";
    for &i in order.iter().take(10) {
        let r = &records[i];
        let (l, v) = r.scores(k);
        let img = image_src(&r.image).map(|src| format!("<img alt='' src='{}'>", escape(&src))).unwrap_or_default();
        let arm = |a: &super::ArmRecord, s: &ArmScores| {
            let hit = if s.exact_match { "<span class='ok'>✓ exact</span>" } else { "<span class='bad'>✗</span>" };
            let rr = s.reciprocal_rank.map(|x| format!(" · RR {x:.2}")).unwrap_or_default();
            let errors = if a.errors.is_empty() {
                String::new()
            } else {
                format!("<br><span class='bad'>failed: {}</span>", escape(&a.errors.join("; ")))
            };
            format!(
                "<code>{}</code><br>→ {}<br><span class='muted'>docs: {}</span><br>{hit} · F1 {:.2}{rr}{errors}",
                escape(&a.query),
                escape(&a.answer),
                escape(&a.retrieved_ids.join(", ")),
                s.token_f1
            )
        };
        let judge = match &r.judge {
            Some(j) => match j.outcome() {
                Some(super::Outcome::VlmWin) => "VLM".to_string(),
                Some(super::Outcome::LegacyWin) => "legacy".to_string(),
                Some(super::Outcome::Tie) => "tie".to_string(),
                None => format!("invalid: {}", escape(&j.verdict)),
            },
            None => "—".into(),
        };
        h += &format!(
            "<tr><td>{img}</td><td><span class='q'>{}</span><br><span class='muted'>id {} · gold: {} · docs: {}</span></td><td>{}</td><td>{}</td><td>{judge}</td></tr>",
            escape(&r.question),
            escape(&r.id),
            escape(&r.answers.join(" | ")),
            escape(&r.gold_doc_ids.join(", ")),
            arm(&r.legacy, &l),
            arm(&r.vlm, &v)
        );
    }
    h += "</table></body></html>";
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{summarize, ArmRecord, JudgeRecord};

    #[test]
    fn escapes_everything_untrusted() {
        let evil = "<script>alert(1)</script>\"'&";
        let rec = EvalRecord {
            id: evil.into(),
            image: "x.png".into(),
            question: evil.into(),
            answers: vec![evil.into()],
            gold_doc_ids: vec![evil.into()],
            legacy: ArmRecord {
                query: evil.into(),
                retrieved_ids: vec![evil.into()],
                answer: evil.into(),
                ms: 1.0,
                errors: vec![evil.into()],
            },
            vlm: ArmRecord { query: evil.into(), retrieved_ids: vec![], answer: "ok".into(), ms: 1.0, errors: vec![] },
            judge: Some(JudgeRecord { swapped: false, verdict: evil.into(), rationale: Some(evil.into()) }),
        };
        let s = summarize(std::slice::from_ref(&rec));
        let meta = ReportMeta { title: evil.into(), facts: vec![(evil.into(), evil.into())] };
        let page = html(&s, &[rec], &meta, &|_| Some("data:image/png;base64,AA\"><script>".into()));
        assert!(!page.contains("<script"), "unescaped script tag in the report");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean() {
        let v: Vec<f64> = (0..50).map(|i| (i % 2) as f64).collect();
        let (lo, hi) = bootstrap_mean_ci(&v, 500, 1).unwrap();
        assert!(lo < 0.5 && hi > 0.5 && lo > 0.25 && hi < 0.75, "{lo} {hi}");
        assert_eq!(bootstrap_mean_ci(&[1.0; 10], 100, 1), Some((1.0, 1.0)));
        assert_eq!(bootstrap_mean_ci(&[], 100, 1), None);
    }
}
