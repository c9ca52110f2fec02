//! Scaled dot-product attention (`shaders/attention.wgsl`) for the ViT (bidirectional) and the LLM (causal,
//! grouped-query, over a KV cache), plus [`write_kv`] to append new keys/values to a cache.
//!
//! The kernel is flash-style: an online softmax over key blocks per (query row, head), so the [Tq, kv_len] score
//! matrix never exists in memory and any context length works. When Tq·Hq rows are too few to fill the device
//! (decode, Tq = 1), the keys are split into chunks processed by different invocations and merged by a second
//! small kernel (split-K, "flash decoding"). Layouts:
//! - q `[Tq, Hq, D]`, out `[Tq, Hq, D]` (so `out.reshape([Tq, Hq*D])` feeds o_proj),
//! - k, v `[Tmax, Hkv, D]`, of which the first `kv_len` rows are valid (the cache); for the ViT Tmax = kv_len.

use crate::error::{Error, Result};
use crate::gpu::{grid_1d, Caps, DType, PipelineKey, Recorder, Tensor};

use super::matmul::{matmul_strided, Strided};
use super::{expect_dtype, params, softmax};

const WG: u32 = 64;
/// The attention kernel's workgroup when rows × splits would fill fewer than 8 workgroups of [`WG`] (decode):
/// CPU adapters run a workgroup on one thread, so one workgroup of 36 invocations (SmolLM2's 9 heads × 4
/// splits) left the other cores idle. lavapipe, SmolLM2 decode: 4.6 → 3.2–3.4 ms of attention per token
/// (docs/benchmarks.md).
const SMALL_WG: u32 = 16;
/// Keys per online-softmax block in the shader (`BK`); split chunks are multiples of it.
const BK: usize = 8;
/// Largest head dimension: the kernel keeps q and the accumulator (2·D floats) per invocation, unrolled in
/// vec4 slots (so D must also be a multiple of 4).
pub const MAX_HEAD_DIM: usize = 128;
/// Most keys one invocation walks. llvmpipe (lavapipe) silently ends all loops of an invocation after 65535
/// iterations in total; the kernel spends ~2.1 per key, so longer rows are split (and merged) instead.
const MAX_CHUNK: usize = 16384;
/// Split-K aims for about this many invocations in flight (rows × splits); below it, rows are split over keys.
const TARGET_INVOCATIONS: usize = 2048;
/// The same on CPU adapters, which run a workgroup per thread: 8 workgroups of [`WG`] keep the cores busy, and
/// more splits only add partial writes and the combine pass. lavapipe, SmolLM2's 64-token prefill (576 rows):
/// unsplit 24–25 ms of attention against 41–46 ms in 4 splits + combine (docs/benchmarks.md).
const CPU_TARGET_INVOCATIONS: usize = 512;
/// Fewest keys per split: shorter chunks cost more in partial writes and the combine than they gain.
const MIN_CHUNK: usize = 32;
/// The key-parallel subgroup kernel (`attn_sg`) aims for about this many workgroups (one subgroup each) in flight.
const SG_TARGET_WORKGROUPS: usize = 512;
/// Most rows (Tq · Hq) for which [`attention`] takes the key-parallel subgroup kernel on GPUs: decode and short
/// prompts. Past it the row kernel has threads enough, and its lanes, neighbouring queries of one head, share
/// each key load. H200 (kernel_bench, SmolLM2 heads): decode 0.032 vs 0.046 ms at 128 keys, 0.113 vs 0.134 at
/// 8192 for the subgroup kernel; a 128-token prefill (1152 rows) 0.08 vs 0.06 ms, 512 tokens 0.45 vs 0.34 for
/// the row kernel.
const SG_MAX_ROWS: usize = 256;

/// What the attention sees beyond the tensors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    /// Causal mask: query i (absolute position `q_pos0 + i`) sees keys `0..=q_pos0 + i`.
    pub causal: bool,
    /// Softmax scale, usually `1 / sqrt(D)`.
    pub scale: f32,
    /// Valid rows of k and v (the cache fill, including the new tokens).
    pub kv_len: usize,
    /// Absolute position of the first query row (0 for a prompt without cache).
    pub q_pos0: usize,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    tq: u32,
    hq: u32,
    hkv: u32,
    kv_len: u32,
    q_pos0: u32,
    causal: u32,
    n_split: u32,
    chunk: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// How the keys of each row are divided among invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnPlan {
    /// Number of key chunks per row (1 = one invocation per row, no combine pass).
    pub n_split: usize,
    /// Keys per chunk (a multiple of the shader's block size).
    pub chunk: usize,
}

impl AttnPlan {
    /// The default plan: split over keys only when Tq·Hq rows leave the device (a CPU adapter: `cpu`) idle.
    /// (`_hkv` is part of the signature so a plan may depend on the kv-head layout; this one does not.)
    pub fn auto(tq: usize, hq: usize, _hkv: usize, kv_len: usize, cpu: bool) -> Self {
        let rows = (tq * hq).max(1);
        let target = if cpu { CPU_TARGET_INVOCATIONS } else { TARGET_INVOCATIONS };
        let want = target.div_ceil(rows);
        let max_split = kv_len.div_ceil(MIN_CHUNK).max(1);
        Self::with_splits(kv_len, want.min(max_split))
    }

    /// The plan of the key-parallel subgroup kernel (subgroups of `sg` lanes): splits until rows × splits reach
    /// [`SG_TARGET_WORKGROUPS`], each split at least `sg` keys.
    pub fn subgroups(tq: usize, hq: usize, kv_len: usize, sg: usize) -> Self {
        let want = SG_TARGET_WORKGROUPS.div_ceil((tq * hq).max(1));
        Self::with_splits(kv_len, want.min(kv_len.div_ceil(sg.max(1)).max(1)))
    }

    /// A plan with about `n_split` chunks (rounded so every chunk is a whole number of blocks).
    pub fn with_splits(kv_len: usize, n_split: usize) -> Self {
        let n = n_split.clamp(1, kv_len.max(1));
        let chunk = (kv_len.div_ceil(n).div_ceil(BK) * BK).clamp(BK, MAX_CHUNK);
        Self { n_split: kv_len.div_ceil(chunk).max(1), chunk }
    }
}

fn check(q: &Tensor, k: &Tensor, v: &Tensor, p: &AttnParams) -> Result<(usize, usize, usize, usize, usize)> {
    expect_dtype("attention", q, DType::F32)?;
    expect_dtype("attention", k, DType::F32)?;
    expect_dtype("attention", v, DType::F32)?;
    let shape_err = |detail: String| Error::Shape { op: "attention", detail };
    let (tq, hq, d) = match q.shape[..] {
        [a, b, c] => (a, b, c),
        _ => return Err(shape_err(format!("q must be [Tq, Hq, D], got {:?}", q.shape))),
    };
    let (tmax, hkv, dk) = match k.shape[..] {
        [a, b, c] => (a, b, c),
        _ => return Err(shape_err(format!("k must be [Tmax, Hkv, D], got {:?}", k.shape))),
    };
    if v.shape != k.shape {
        return Err(shape_err(format!("v {:?} must have the shape of k {:?}", v.shape, k.shape)));
    }
    if dk != d {
        return Err(shape_err(format!("head dim of q {:?} and k {:?} differ", q.shape, k.shape)));
    }
    if d == 0 || d > MAX_HEAD_DIM || d % 4 != 0 {
        return Err(shape_err(format!("head dim {d} must be a multiple of 4 in 4..={MAX_HEAD_DIM}")));
    }
    if hkv == 0 || hq == 0 || hq % hkv != 0 {
        return Err(shape_err(format!("{hq} query heads are not a multiple of {hkv} kv heads")));
    }
    if p.kv_len == 0 || p.kv_len > tmax {
        return Err(shape_err(format!("kv_len {} not in 1..={tmax} (the cache rows of k {:?})", p.kv_len, k.shape)));
    }
    if p.causal && p.q_pos0 + tq > p.kv_len {
        return Err(shape_err(format!(
            "causal queries at positions {}..{} need kv_len ≥ {}, got {}; write the new keys first",
            p.q_pos0,
            p.q_pos0 + tq,
            p.q_pos0 + tq,
            p.kv_len
        )));
    }
    Ok((tq, hq, hkv, d, tmax))
}

/// `softmax(q kᵀ · scale + mask) v` per head. See the module docs for layouts; returns `[Tq, Hq, D]`.
pub fn attention(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, p: &AttnParams) -> Result<Tensor> {
    let (tq, hq, hkv, _, _) = check(q, k, v, p)?;
    if rec.ctx().caps.cpu_adapter && gemm_supports(tq, hq, hkv, p) && tq * p.kv_len >= GEMM_MIN_SCORES {
        return attention_gemm(rec, q, k, v, p);
    }
    if let Some(sg) = subgroup_kernel_size(&rec.ctx().caps).filter(|_| tq * hq <= SG_MAX_ROWS) {
        let plan = AttnPlan::subgroups(tq, hq, p.kv_len, sg as usize);
        return attention_subgroups(rec, q, k, v, p, plan);
    }
    let plan = AttnPlan::auto(tq, hq, hkv, p.kv_len, rec.ctx().caps.cpu_adapter);
    attention_with_plan(rec, q, k, v, p, plan)
}

/// The subgroup size with which [`attention`] runs the key-parallel kernel, or None: GPUs (not CPU adapters,
/// where a subgroup operation is a loop over emulated lanes) whose subgroups have one known size of 4 to 128.
pub fn subgroup_kernel_size(caps: &Caps) -> Option<u32> {
    sg_keys_size(caps).filter(|_| !caps.cpu_adapter)
}

/// The adapter's subgroup size if the key-parallel kernel can run with it: one known power of two in 4..=128.
fn sg_keys_size(caps: &Caps) -> Option<u32> {
    caps.subgroup_size.filter(|s| caps.subgroups && s.is_power_of_two() && (4..=128).contains(s))
}

/// [`attention`] by the key-parallel subgroup kernel (`attn_sg`: a subgroup per row and key split, its lanes over
/// keys), on any adapter with subgroups of one known size (tests force it on CPU adapters);
/// [`Error::MissingFeature`] elsewhere.
pub fn attention_subgroups(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &AttnParams,
    plan: AttnPlan,
) -> Result<Tensor> {
    let caps = &rec.ctx().caps;
    let sg = sg_keys_size(caps).ok_or_else(|| Error::MissingFeature {
        feature: "subgroups",
        what: format!("the key-parallel attention (subgroup size {:?})", caps.subgroup_size),
    })?;
    run_plan(rec, q, k, v, p, plan, Some(sg))
}

/// Fewest scores per head (Tq · kv_len) for which [`attention`] takes [`attention_gemm`] on CPU adapters: the ViT
/// (1024 × 1024 for SmolVLM's 512-pixel tiles), not decode or short prompts.
const GEMM_MIN_SCORES: usize = 64 * 64;
/// Bytes of scores [`attention_gemm`] holds at once: heads go in groups that fit.
const GEMM_SCORE_BYTES: usize = super::BLOCK_BYTES;

/// Most keys [`attention_gemm`] takes: its softmax walks a row in one invocation, and llvmpipe ends an
/// invocation's loops past 65535 iterations (see [`MAX_CHUNK`]).
const GEMM_MAX_KEYS: usize = 16384;

/// Whether [`attention_gemm`] handles this: bidirectional, one kv head per query head, a vec4-aligned key count of
/// at most [`GEMM_MAX_KEYS`], and one head's scores within [`GEMM_SCORE_BYTES`].
fn gemm_supports(tq: usize, hq: usize, hkv: usize, p: &AttnParams) -> bool {
    !p.causal
        && p.q_pos0 == 0
        && hq == hkv
        && p.kv_len % 4 == 0
        && p.kv_len <= GEMM_MAX_KEYS
        && tq.saturating_mul(p.kv_len).saturating_mul(4) <= GEMM_SCORE_BYTES
}

/// Bidirectional attention as matrix products, for CPU adapters (lavapipe, SwiftShader), where the flash kernel's
/// per-query loop cannot reuse a loaded key across queries and the barrier-free GEMM's 8 × 4 register tile can:
/// per group of heads, `s = scale · q kᵀ` and `o = softmax(s) · v` with [`matmul_strided`] reading the heads in
/// place (v transposed once per call), and the row softmax between them. The scores exist in memory, a group of
/// heads at a time (at most [`GEMM_SCORE_BYTES`]). Needs no causal mask, Hq = Hkv and kv_len % 4 == 0.
pub fn attention_gemm(rec: &mut Recorder, q: &Tensor, k: &Tensor, v: &Tensor, p: &AttnParams) -> Result<Tensor> {
    let (tq, hq, hkv, d, _) = check(q, k, v, p)?;
    if !gemm_supports(tq, hq, hkv, p) {
        return Err(Error::Shape {
            op: "attention_gemm",
            detail: format!(
                "needs bidirectional attention from position 0, Hq = Hkv, kv_len % 4 == 0, kv_len ≤ {GEMM_MAX_KEYS} and Tq · kv_len · 4 ≤ {GEMM_SCORE_BYTES} bytes; got causal {}, q_pos0 {}, {hq}/{hkv} heads, Tq {tq}, kv_len {}",
                p.causal, p.q_pos0, p.kv_len
            ),
        });
    }
    let out = rec.empty(&[tq, hq, d], DType::F32)?;
    if tq == 0 {
        return Ok(out);
    }
    let kv = p.kv_len;
    let vt = rec.empty(&[hkv, d, kv], DType::F32)?;
    let prm = Params {
        tq: tq as u32,
        hq: hq as u32,
        hkv: hkv as u32,
        kv_len: kv as u32,
        q_pos0: 0,
        causal: 0,
        n_split: 1,
        chunk: 0,
        scale: p.scale,
        _pad: [0; 3],
    };
    let key = PipelineKey::new("attention", "transpose_v")
        .define("TRANSPOSE_V")
        .define_value("HEAD_DIM", d)
        .constant("WG", WG);
    let grid = grid_1d((kv * hkv * d).div_ceil(WG as usize) as u32, rec.ctx().caps.max_workgroups_per_dim);
    rec.dispatch(&key, &params(&prm), &[v.into(), (&vt).into()], grid)?;
    let per_head = tq * kv;
    let group = (GEMM_SCORE_BYTES / (4 * per_head)).clamp(1, hq);
    for h0 in (0..hq).step_by(group) {
        let hc = group.min(hq - h0);
        let s = rec.empty(&[hc, tq, kv], DType::F32)?;
        let qs = Strided { t: q, off: h0 * d, stride: hq * d, batch: d };
        let ks = Strided { t: k, off: h0 * d, stride: hkv * d, batch: d };
        let ss = Strided { t: &s, off: 0, stride: kv, batch: per_head };
        matmul_strided(rec, qs, ks, ss, (tq, kv, d), hc, p.scale)?;
        softmax::softmax_in_place(rec, &s)?;
        let ps = Strided { t: &s, off: 0, stride: kv, batch: per_head };
        let vs = Strided { t: &vt, off: h0 * d * kv, stride: kv, batch: d * kv };
        let os = Strided { t: &out, off: h0 * d, stride: hq * d, batch: d };
        matmul_strided(rec, ps, vs, os, (tq, d, kv), hc, 1.0)?;
    }
    Ok(out)
}

/// [`attention`] with an explicit key split (tests and the benchmark use it to cover and time both paths).
pub fn attention_with_plan(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &AttnParams,
    plan: AttnPlan,
) -> Result<Tensor> {
    run_plan(rec, q, k, v, p, plan, None)
}

/// The flash kernel with `plan`'s key splits (+ the combine pass): the row kernel, or with `sg` the
/// key-parallel subgroup kernel of that subgroup size.
fn run_plan(
    rec: &mut Recorder,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    p: &AttnParams,
    plan: AttnPlan,
    sg: Option<u32>,
) -> Result<Tensor> {
    let (tq, hq, hkv, d, _) = check(q, k, v, p)?;
    let plan = AttnPlan::with_splits(p.kv_len, plan.n_split);
    let ctx = rec.ctx();
    let out = rec.empty(&[tq, hq, d], DType::F32)?;
    if tq == 0 {
        return Ok(out);
    }
    let rows = tq * hq;
    let prm = Params {
        tq: tq as u32,
        hq: hq as u32,
        hkv: hkv as u32,
        kv_len: p.kv_len as u32,
        q_pos0: p.q_pos0 as u32,
        causal: p.causal as u32,
        n_split: plan.n_split as u32,
        chunk: plan.chunk as u32,
        scale: p.scale,
        _pad: [0; 3],
    };
    let bytes = params(&prm);
    let max_wg = ctx.caps.max_workgroups_per_dim;
    let invocations = rows * plan.n_split;
    let wg = if invocations < 8 * WG as usize { SMALL_WG } else { WG };
    let key = |entry: &'static str, wg: u32| {
        PipelineKey::new("attention", entry).define_value("HEAD_DIM", d).constant("WG", wg)
    };
    // the attention pass: an invocation per (row, split), or with `sg` a subgroup-sized workgroup per (row, split)
    let (attn_key, grid) = match sg {
        Some(sg) => (
            PipelineKey::new("attention", "attn_sg")
                .define_value("HEAD_DIM", d)
                .define("SG_KEYS")
                .define_value("SG", sg),
            grid_1d(invocations as u32, max_wg),
        ),
        None => (key("attn", wg), grid_1d(invocations.div_ceil(wg as usize) as u32, max_wg)),
    };
    if plan.n_split == 1 {
        rec.dispatch(&attn_key, &bytes, &[q.into(), k.into(), v.into(), (&out).into()], grid)?;
    } else {
        let part_o = rec.empty(&[plan.n_split, hq, tq, d], DType::F32)?;
        let part_ml = rec.empty(&[plan.n_split, hq, tq, 2], DType::F32)?;
        rec.dispatch(
            &attn_key.define("SPLIT"),
            &bytes,
            &[q.into(), k.into(), v.into(), (&part_o).into(), (&part_ml).into()],
            grid,
        )?;
        let grid = grid_1d((rows * d).div_ceil(WG as usize) as u32, max_wg);
        rec.dispatch(
            &key("combine", WG).define("COMBINE"),
            &bytes,
            &[(&part_o).into(), (&part_ml).into(), (&out).into()],
            grid,
        )?;
    }
    Ok(out)
}

/// Copies `new` `[T, Hkv, D]` into rows `pos..pos+T` of `cache` `[Tmax, Hkv, D]` (one buffer copy).
pub fn write_kv(rec: &mut Recorder, cache: &Tensor, new: &Tensor, pos: usize) -> Result<()> {
    expect_dtype("write_kv", cache, DType::F32)?;
    expect_dtype("write_kv", new, DType::F32)?;
    let (tmax, row) = match cache.shape[..] {
        [t, h, d] => (t, h * d),
        _ => {
            return Err(Error::Shape {
                op: "write_kv",
                detail: format!("cache must be [Tmax, Hkv, D], got {:?}", cache.shape),
            })
        }
    };
    let t = match new.shape[..] {
        [t, h, d] if h * d == row && new.shape[1..] == cache.shape[1..] => t,
        _ => {
            return Err(Error::Shape {
                op: "write_kv",
                detail: format!(
                    "new rows {:?} must be [T, {}, {}] like the cache {:?}",
                    new.shape, cache.shape[1], cache.shape[2], cache.shape
                ),
            })
        }
    };
    if pos + t > tmax {
        return Err(Error::ContextOverflow { tokens: pos + t, context: tmax });
    }
    if t == 0 {
        return Ok(());
    }
    let bytes_per_row = (row * 4) as u64;
    rec.copy(new, 0, cache, pos as u64 * bytes_per_row, t as u64 * bytes_per_row)
}

// ---- CPU reference -------------------------------------------------------------------------------------------

/// Naive attention with an f64 softmax: the reference for the tests. `q` is `[tq, hq, d]`, `k`/`v` are
/// `[≥ kv_len, hkv, d]`; returns `[tq, hq, d]`.
#[allow(clippy::too_many_arguments)]
pub fn cpu_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    tq: usize,
    hq: usize,
    hkv: usize,
    d: usize,
    p: &AttnParams,
) -> Vec<f32> {
    let group = hq / hkv;
    let mut out = vec![0f32; tq * hq * d];
    let mut scores = vec![0f64; p.kv_len];
    for i in 0..tq {
        let end = if p.causal { (p.q_pos0 + i + 1).min(p.kv_len) } else { p.kv_len };
        for h in 0..hq {
            let hk = h / group;
            let qr = &q[(i * hq + h) * d..][..d];
            let mut mx = f64::NEG_INFINITY;
            for (t, s) in scores[..end].iter_mut().enumerate() {
                let kr = &k[(t * hkv + hk) * d..][..d];
                *s = qr.iter().zip(kr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * p.scale as f64;
                mx = mx.max(*s);
            }
            let mut sum = 0.0;
            for s in &mut scores[..end] {
                *s = (*s - mx).exp();
                sum += *s;
            }
            let o = &mut out[(i * hq + h) * d..][..d];
            for (j, od) in o.iter_mut().enumerate() {
                let acc: f64 = (0..end).map(|t| scores[t] * v[(t * hkv + hk) * d + j] as f64).sum();
                *od = (acc / sum) as f32;
            }
        }
    }
    out
}
