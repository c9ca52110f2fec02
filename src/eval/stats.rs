//! Statistics for the side-by-side comparison: McNemar's exact test on paired binary outcomes, relative gain,
//! a seeded percentile-bootstrap interval for a win rate (ties count one half), and the judge's per-item A/B
//! order randomization with the mapping of a verdict back to the arms.

use crate::testing::Rng;
use serde::{Deserialize, Serialize};

/// McNemar's exact test (two-sided). `b` and `c` are the discordant pair counts (e.g. b = legacy right and
/// vlm wrong, c = legacy wrong and vlm right). Under H0 the discordant pairs split as X ~ Bin(b + c, 1/2) and
/// p = min(1, 2·P[X ≤ min(b, c)]). The binomial terms are accumulated in log space (log-sum-exp), so large
/// counts neither overflow nor underflow to a spurious 0 before the sum. Returns 1 when b = c = 0.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    let m = b.min(c);
    if n == 0 || 2 * m >= n {
        // b == c: P[X ≤ n/2] ≥ 1/2, so the doubled tail is ≥ 1.
        return 1.0;
    }
    // log pmf(0) = -n ln 2; log pmf(k) = log pmf(k-1) + ln((n - k + 1) / k).
    let mut logs = Vec::with_capacity(m as usize + 1);
    let mut lp = -(n as f64) * std::f64::consts::LN_2;
    logs.push(lp);
    for k in 1..=m {
        lp += ((n - k + 1) as f64).ln() - (k as f64).ln();
        logs.push(lp);
    }
    let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let log_tail = max + logs.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    (2.0 * log_tail.exp()).min(1.0)
}

/// Relative gain (vlm − legacy) / legacy; `None` when legacy is 0 (or either value is not finite).
pub fn relative_gain(vlm: f64, legacy: f64) -> Option<f64> {
    if legacy == 0.0 || !legacy.is_finite() || !vlm.is_finite() {
        return None;
    }
    Some((vlm - legacy) / legacy)
}

/// The outcome of one side-by-side comparison, from the VLM arm's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    VlmWin,
    LegacyWin,
    Tie,
}

impl Outcome {
    /// Score of the VLM arm: win 1, tie 1/2, loss 0.
    pub fn score(self) -> f64 {
        match self {
            Outcome::VlmWin => 1.0,
            Outcome::Tie => 0.5,
            Outcome::LegacyWin => 0.0,
        }
    }
}

/// Win rate of the VLM arm with ties counted as half; `None` for no outcomes.
pub fn win_rate(outcomes: &[Outcome]) -> Option<f64> {
    if outcomes.is_empty() {
        return None;
    }
    Some(outcomes.iter().map(|o| o.score()).sum::<f64>() / outcomes.len() as f64)
}

/// Wilson score 95% interval of a proportion `p` observed over `n` trials (`None` for n = 0). Unlike a
/// percentile bootstrap it does not collapse to a point for small or unanimous samples (4 wins of 4: 51–100 %,
/// not 100–100 %). The win rate's ties count as half a success, as in [`win_rate`].
pub fn wilson_interval(p: f64, n: usize) -> Option<(f64, f64)> {
    if n == 0 || !(0.0..=1.0).contains(&p) {
        return None;
    }
    const Z: f64 = 1.959_963_984_540_054; // the 97.5th percentile of the standard normal
    let (n, z2) = (n as f64, Z * Z);
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Linear-interpolation quantile (R type 7) of sorted values.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Percentile-bootstrap 95% interval for [`win_rate`]: `resamples` resamples of the items with replacement
/// (indices drawn from `webvlm::testing::Rng` seeded with `seed`, so the interval is reproducible), the 2.5th and
/// 97.5th percentiles of the resampled win rates. `None` for no outcomes or no resamples.
pub fn bootstrap_win_rate_ci(outcomes: &[Outcome], resamples: usize, seed: u64) -> Option<(f64, f64)> {
    let n = outcomes.len();
    if n == 0 || resamples == 0 {
        return None;
    }
    let scores: Vec<f64> = outcomes.iter().map(|o| o.score()).collect();
    let mut rng = Rng::new(seed);
    let mut rates: Vec<f64> =
        (0..resamples).map(|_| (0..n).map(|_| scores[rng.usize(0, n - 1)]).sum::<f64>() / n as f64).collect();
    rates.sort_by(f64::total_cmp);
    Some((quantile_sorted(&rates, 0.025), quantile_sorted(&rates, 0.975)))
}

/// 64-bit FNV-1a of the bytes.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether the judge sees the arms swapped for this item. Unswapped: answer A is the VLM arm's, B the legacy
/// arm's; swapped: A is legacy, B is VLM. Deterministic in (`item_id`, `seed`) and about half the items are
/// swapped, so position bias in the judge cancels out on average.
pub fn judge_swapped(item_id: &str, seed: u64) -> bool {
    let mut rng = Rng::new(fnv1a(item_id.as_bytes()) ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
    rng.next_u64() >> 63 == 1
}

/// The judge's verdict about answers shown as A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    A,
    B,
    #[serde(rename = "tie")]
    Tie,
}

impl Verdict {
    /// Parses "A", "B" or "tie" (case-insensitive, surrounding whitespace, quotes and a trailing period ignored).
    pub fn parse(s: &str) -> Option<Verdict> {
        let t = s.trim().trim_matches(|c: char| c == '"' || c == '\'' || c == '.' || c.is_whitespace());
        match t.to_ascii_lowercase().as_str() {
            "a" => Some(Verdict::A),
            "b" => Some(Verdict::B),
            "tie" => Some(Verdict::Tie),
            _ => None,
        }
    }

    /// Maps the verdict back to the arms given the item's order (see [`judge_swapped`]).
    pub fn outcome(self, swapped: bool) -> Outcome {
        match (self, swapped) {
            (Verdict::Tie, _) => Outcome::Tie,
            (Verdict::A, false) | (Verdict::B, true) => Outcome::VlmWin,
            (Verdict::B, false) | (Verdict::A, true) => Outcome::LegacyWin,
        }
    }
}

/// [`Verdict::parse`] then [`Verdict::outcome`]: "A" | "B" | "tie" → the outcome for the arms; `None` when the
/// verdict is none of these.
pub fn verdict_to_outcome(verdict: &str, swapped: bool) -> Option<Outcome> {
    Verdict::parse(verdict).map(|v| v.outcome(swapped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_small() {
        assert!((mcnemar_exact(1, 9) - 22.0 / 1024.0).abs() < 1e-15);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
    }

    #[test]
    fn verdict_mapping() {
        assert_eq!(verdict_to_outcome("A", false), Some(Outcome::VlmWin));
        assert_eq!(verdict_to_outcome("A", true), Some(Outcome::LegacyWin));
        assert_eq!(verdict_to_outcome(" Tie ", true), Some(Outcome::Tie));
        assert_eq!(verdict_to_outcome("C", true), None);
    }
}
