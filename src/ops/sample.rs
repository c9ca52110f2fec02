//! Token selection on the GPU (`shaders/sample.wgsl`), so a decode step reads back a single u32: [`argmax`]
//! (greedy), [`sample`] (temperature → top-k → top-p → inverse CDF with a caller-supplied uniform draw) and
//! [`repetition_penalty`] (Hugging Face semantics). CPU references: [`cpu_argmax`], [`cpu_sample`],
//! [`cpu_repetition_penalty`].
//!
//! Logits are `[V]` or `[T, V]`; the last row is used (the next-token row after a prefill).
//!
//! Sampling never sorts the vocabulary. Per chunk of the vocabulary: max and Σexp (for the softmax normalizer);
//! the K-th largest chunk maximum is a threshold L that at least K logits reach, so the top K are among the
//! logits ≥ L (typically a few × K); those are compacted in index order and ranked against each other, which
//! places the K best in descending order; one invocation then applies top-p and draws. Six small dispatches,
//! none with a barrier.
//!
//! Documented limits: `top_k` ≤ [`MAX_TOP_K`]; with `top_k = 0` the nucleus is taken over the
//! [`MAX_TOP_K`] most likely tokens (its mass is still measured against the full softmax, so it is exact
//! whenever the nucleus has ≤ 256 tokens; otherwise it is truncated there). At most [`CANDIDATE_CAP`] logits
//! may tie at or above the threshold (only reachable when most of the vocabulary shares one value); beyond
//! that the lowest indices are kept. Ties at the top-k boundary keep the lower index (HF keeps all tied).

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, DType, PipelineKey, Recorder, Tensor};

use super::{expect_dtype, params};

const WG: u32 = 64;
/// Largest `top_k` (and the candidate count when top-k is off).
pub const MAX_TOP_K: u32 = 256;
/// Candidate buffer size (`CAP` in the shader).
pub const CANDIDATE_CAP: usize = 8192;
/// Vocabulary chunks: at most this many (their per-chunk stats are scanned by single invocations).
const MAX_CHUNKS: usize = 1024;

/// Sampling settings for one draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleParams {
    /// Softmax temperature; ≤ 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (≤ 256); 0 = off.
    pub top_k: u32,
    /// Nucleus: keep the smallest prefix of the sorted tokens whose mass reaches `top_p`; ≥ 1 = off.
    pub top_p: f32,
    /// A U[0, 1) draw from the caller's seeded RNG; the result is a deterministic function of it.
    pub uniform: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    v: u32,
    row_off: u32,
    n_chunks: u32,
    chunk: u32,
    k: u32,
    top_k_on: u32,
    inv_temp: f32,
    top_p: f32,
    uniform: f32,
    penalty: f32,
    n_hist: u32,
    _pad: u32,
}

impl Params {
    fn new(v: usize, row_off: usize, n_chunks: usize) -> Self {
        Params {
            v: v as u32,
            row_off: row_off as u32,
            n_chunks: n_chunks as u32,
            chunk: v.div_ceil(n_chunks.max(1)) as u32,
            k: 1,
            top_k_on: 0,
            inv_temp: 1.0,
            top_p: 1.0,
            uniform: 0.0,
            penalty: 1.0,
            n_hist: 0,
            _pad: 0,
        }
    }
}

/// (V, offset of the last row) of a `[V]` or `[T, V]` logits tensor.
fn last_row(op: &'static str, logits: &Tensor) -> Result<(usize, usize)> {
    expect_dtype(op, logits, DType::F32)?;
    let v = match logits.shape[..] {
        [v] | [_, v] => v,
        _ => return Err(Error::Shape { op, detail: format!("logits must be [V] or [T, V], got {:?}", logits.shape) }),
    };
    if v == 0 || logits.numel() == 0 {
        return Err(Error::Shape { op, detail: format!("empty logits {:?}", logits.shape) });
    }
    Ok((v, logits.numel() - v))
}

/// Chunk count for `v` logits: as many as useful up to `want`, each chunk a whole number of logits.
fn chunks(v: usize, want: usize) -> usize {
    let c = want.clamp(1, MAX_CHUNKS).min(v);
    v.div_ceil(v.div_ceil(c))
}

fn key(entry: &'static str, stage: &str) -> PipelineKey {
    PipelineKey::new("sample", entry).define(stage).constant("WG", WG)
}

fn groups(rec: &Recorder, n: usize) -> [u32; 3] {
    grid_1d(n.div_ceil(WG as usize) as u32, rec.ctx().caps.max_workgroups_per_dim)
}

/// Index of the largest logit of the last row (ties → the lowest index, like `torch.argmax`) as U32 `[1]`.
pub fn argmax(rec: &mut Recorder, logits: &Tensor) -> Result<Tensor> {
    let (v, row_off) = last_row("argmax", logits)?;
    let c = chunks(v, MAX_CHUNKS);
    let prm = params(&Params::new(v, row_off, c));
    let part = rec.empty(&[c, 2], DType::U32)?;
    let out = rec.empty(&[1], DType::U32)?;
    rec.dispatch(&key("argmax_partial", "ARGMAX_PARTIAL"), &prm, &[logits.into(), (&part).into()], groups(rec, c))?;
    rec.dispatch(&key("argmax_final", "ARGMAX_FINAL"), &prm, &[(&part).into(), (&out).into()], [1, 1, 1])?;
    Ok(out)
}

/// Draws a token id from the last row of `logits` (U32 `[1]`); see the module docs for the method and limits.
/// `temperature ≤ 0` or `top_k = 1` is [`argmax`].
pub fn sample(rec: &mut Recorder, logits: &Tensor, p: &SampleParams) -> Result<Tensor> {
    let (v, row_off) = last_row("sample", logits)?;
    check_params(p)?;
    if p.temperature <= 0.0 || p.top_k == 1 {
        return argmax(rec, logits);
    }
    let k = effective_k(p, v);
    // More chunks than K make the threshold tighter (fewer candidates to rank); 1024 keeps every scan short.
    let c = chunks(v, (4 * k).max(MAX_CHUNKS));
    let mut prm = Params::new(v, row_off, c);
    prm.k = k as u32;
    prm.top_k_on = (p.top_k > 0) as u32;
    prm.inv_temp = 1.0 / p.temperature;
    prm.top_p = p.top_p;
    prm.uniform = p.uniform;
    let prm = params(&prm);

    let stats = rec.empty(&[c, 2], DType::F32)?;
    let state = rec.empty(&[4], DType::U32)?;
    let counts = rec.empty(&[c], DType::U32)?;
    let cand = rec.empty(&[CANDIDATE_CAP, 2], DType::U32)?;
    let sorted = rec.empty(&[k, 2], DType::U32)?;
    let out = rec.empty(&[1], DType::U32)?;
    let g = groups(rec, c);
    rec.dispatch(&key("chunk_stats", "STATS"), &prm, &[logits.into(), (&stats).into()], g)?;
    rec.dispatch(&key("threshold", "THRESHOLD"), &prm, &[(&stats).into(), (&state).into()], g)?;
    rec.dispatch(&key("count", "COUNT"), &prm, &[logits.into(), (&state).into(), (&counts).into()], g)?;
    rec.dispatch(
        &key("compact", "COMPACT"),
        &prm,
        &[logits.into(), (&state).into(), (&counts).into(), (&cand).into()],
        g,
    )?;
    let rank_groups = groups(rec, CANDIDATE_CAP.min(v));
    rec.dispatch(&key("rank", "RANK"), &prm, &[(&state).into(), (&cand).into(), (&sorted).into()], rank_groups)?;
    rec.dispatch(&key("pick", "PICK"), &prm, &[(&state).into(), (&sorted).into(), (&out).into()], [1, 1, 1])?;
    Ok(out)
}

fn check_params(p: &SampleParams) -> Result<()> {
    if p.top_k > MAX_TOP_K {
        return Err(Error::Config(format!(
            "top_k = {} is more than the GPU sampler's {MAX_TOP_K}; use ≤ {MAX_TOP_K}",
            p.top_k
        )));
    }
    if !(0.0..1.0).contains(&p.uniform) {
        return Err(Error::Config(format!("the uniform draw must be in [0, 1), got {}", p.uniform)));
    }
    if p.top_p.is_nan() || p.top_p <= 0.0 || p.temperature.is_nan() {
        return Err(Error::Config(format!("top_p must be in (0, 1] and temperature a number, got {p:?}")));
    }
    Ok(())
}

fn effective_k(p: &SampleParams, v: usize) -> usize {
    let k = if p.top_k == 0 { MAX_TOP_K } else { p.top_k } as usize;
    k.min(v)
}

/// Applies the repetition penalty to the last row of `logits` for every distinct id among the first `n` of
/// `history` (U32; ids ≥ V are ignored): a positive logit is divided by `penalty`, others multiplied. Returns new
/// logits (a copy; the input is unchanged), so repeated ids in the history are penalized once, as in HF's
/// gather/scatter.
pub fn repetition_penalty(
    rec: &mut Recorder,
    logits: &Tensor,
    history: &Tensor,
    n: usize,
    penalty: f32,
) -> Result<Tensor> {
    let (v, row_off) = last_row("repetition_penalty", logits)?;
    expect_dtype("repetition_penalty", history, DType::U32)?;
    if !(penalty > 0.0) {
        return Err(Error::Config(format!("repetition penalty must be > 0, got {penalty}")));
    }
    if n > history.numel() {
        return Err(Error::Shape {
            op: "repetition_penalty",
            detail: format!("{n} ids of a history of {}", history.numel()),
        });
    }
    let out = rec.empty(&logits.shape, DType::F32)?;
    rec.copy(logits, 0, &out, 0, logits.numel() as u64 * 4)?;
    if n > 0 {
        let mut prm = Params::new(v, row_off, 1);
        prm.penalty = penalty;
        prm.n_hist = n as u32;
        rec.dispatch(
            &key("penalty", "PENALTY"),
            &params(&prm),
            &[logits.into(), history.into(), (&out).into()],
            groups(rec, n),
        )?;
    }
    Ok(out)
}

// ---- CPU references ------------------------------------------------------------------------------------------

/// Index of the first maximum.
pub fn cpu_argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The reference sampler, in f64, with the GPU sampler's documented limits. Returns the token id and the
/// smallest distance of the decision from a boundary (of the top-p cut or of the inverse CDF, in probability
/// units): tests skip draws closer than float rounding to one.
pub fn cpu_sample_with_margin(row: &[f32], p: &SampleParams) -> (u32, f64) {
    if p.temperature <= 0.0 || p.top_k == 1 {
        return (cpu_argmax(row), f64::INFINITY);
    }
    let k = effective_k(p, row.len());
    let inv_t = 1.0 / p.temperature as f64;
    let usable = |x: f32| x > -3.0e38;
    let mut idx: Vec<usize> = (0..row.len()).filter(|&i| usable(row[i])).collect();
    if idx.is_empty() {
        return (0, f64::INFINITY);
    }
    // descending value, then ascending index
    idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap().then(a.cmp(&b)));
    let mx = row[idx[0]] as f64;
    let e = |i: usize| ((row[i] as f64 - mx) * inv_t).exp();
    let top = &idx[..k.min(idx.len())];
    let zn: f64 = if p.top_k > 0 { top.iter().map(|&i| e(i)).sum() } else { idx.iter().map(|&i| e(i)).sum() };
    let mut margin = f64::INFINITY;
    let mut keep = top.len();
    if p.top_p < 1.0 {
        let mut mass = 0.0;
        for (j, &i) in top.iter().enumerate() {
            if j > 0 {
                margin = margin.min((mass / zn - p.top_p as f64).abs());
                if mass / zn >= p.top_p as f64 {
                    keep = j;
                    break;
                }
            }
            mass += e(i);
        }
    }
    let kept: f64 = top[..keep].iter().map(|&i| e(i)).sum();
    let u = p.uniform as f64;
    let mut acc = 0.0;
    let mut chosen = top[keep - 1];
    for &i in &top[..keep] {
        acc += e(i);
        margin = margin.min((acc / kept - u).abs());
        if acc / kept > u {
            chosen = i;
            break;
        }
    }
    (chosen as u32, margin)
}

/// The reference sampler: see [`cpu_sample_with_margin`].
pub fn cpu_sample(row: &[f32], p: &SampleParams) -> u32 {
    cpu_sample_with_margin(row, p).0
}

/// HF `RepetitionPenaltyLogitsProcessor` on one row: each distinct id in `history` (< row length) once.
pub fn cpu_repetition_penalty(row: &[f32], history: &[u32], penalty: f32) -> Vec<f32> {
    let mut out = row.to_vec();
    for &id in history {
        if let Some(&x) = row.get(id as usize) {
            out[id as usize] = if x > 0.0 { x / penalty } else { x * penalty };
        }
    }
    out
}
