//! Attention and KV-cache writes against the CPU reference: odd shapes, grouped-query heads, causal and
//! bidirectional, a partly filled cache (q_pos0 > 0), the split-K and single-pass paths, and typed errors.

mod common;

use webvlm::gpu::{GpuContext, Recorder};
use webvlm::ops::attention::{self as at, AttnParams, AttnPlan};
use webvlm::testing::{check_close, Rng};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

const TQ: &[usize] = &[1, 3, 17];
const KV: &[usize] = &[1, 5, 64, 300, 1100];
const HEADS: &[(usize, usize)] = &[(4, 2), (3, 1), (2, 2)];
const DIMS: &[usize] = &[8, 64, 80];

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// Which attention implementation a case runs.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// `attention`: what the adapter gets by default.
    Auto,
    /// The flash kernel with about this many key splits.
    Splits(usize),
    /// `attention_gemm` (bidirectional, as strided GEMMs + softmax).
    Gemm,
    /// The key-parallel subgroup kernel with about this many key splits.
    Subgroups(usize),
}

/// Runs one case against the reference. The cache has `tmax > kv_len` rows; rows past kv_len hold NaN so any
/// read beyond the valid part poisons the output.
#[allow(clippy::too_many_arguments)]
async fn case(
    ctx: &GpuContext,
    rng: &mut Rng,
    tq: usize,
    (hq, hkv): (usize, usize),
    d: usize,
    kv_len: usize,
    tmax: usize,
    causal: bool,
    q_pos0: usize,
    kernel: Kernel,
) -> Result<(), String> {
    let q = rng.normal_vec(tq * hq * d, 1.0);
    let mut k = rng.normal_vec(tmax * hkv * d, 1.0);
    let mut v = rng.normal_vec(tmax * hkv * d, 1.0);
    for x in k[kv_len * hkv * d..].iter_mut().chain(v[kv_len * hkv * d..].iter_mut()) {
        *x = f32::NAN;
    }
    let p = AttnParams { causal, scale: 1.0 / (d as f32).sqrt(), kv_len, q_pos0 };
    let tqg = ctx.upload_f32(&q, &[tq, hq, d]).map_err(e)?;
    let tk = ctx.upload_f32(&k, &[tmax, hkv, d]).map_err(e)?;
    let tv = ctx.upload_f32(&v, &[tmax, hkv, d]).map_err(e)?;
    let mut rec = Recorder::new(ctx);
    let out = match kernel {
        Kernel::Auto => at::attention(&mut rec, &tqg, &tk, &tv, &p),
        Kernel::Splits(n) => at::attention_with_plan(&mut rec, &tqg, &tk, &tv, &p, AttnPlan::with_splits(kv_len, n)),
        Kernel::Gemm => at::attention_gemm(&mut rec, &tqg, &tk, &tv, &p),
        Kernel::Subgroups(n) => at::attention_subgroups(&mut rec, &tqg, &tk, &tv, &p, AttnPlan::with_splits(kv_len, n)),
    }
    .map_err(e)?;
    assert_eq!(out.shape, vec![tq, hq, d]);
    rec.submit().map_err(e)?;
    let got = ctx.read_f32(&out).await.map_err(e)?;
    let want = at::cpu_attention(&q, &k, &v, tq, hq, hkv, d, &p);
    let what = format!(
        "attention tq={tq} hq={hq} hkv={hkv} d={d} kv_len={kv_len} tmax={tmax} causal={causal} q_pos0={q_pos0} \
         {kernel:?}"
    );
    check_close(&what, &got, &want, 2e-5, 2e-4)?;
    Ok(())
}

/// A sweep case: (Tq, (Hq, Hkv), D, kv_len, causal).
type SweepCase = (usize, (usize, usize), usize, usize, bool);

/// The sweep of the brief, thinned so each (Tq, kv_len) pair meets every
/// head layout / head dim once across the two masks. A causal case is a cache: its queries are the last Tq of
/// kv_len positions (so kv_len ≥ Tq; q_pos0 = kv_len − Tq > 0 when kv_len > Tq).
fn sweep() -> Vec<SweepCase> {
    let mut cases = Vec::new();
    let mut n = 0usize;
    for &tq in TQ {
        for &kv in KV {
            for causal in [false, true] {
                let heads = HEADS[n % HEADS.len()];
                let d = DIMS[(n / HEADS.len() + n) % DIMS.len()];
                n += 1;
                if !causal || kv >= tq {
                    cases.push((tq, heads, d, kv, causal));
                }
            }
        }
    }
    cases
}

/// The default kernels on the sweep; a causal case's cache has 7 rows past kv_len (NaN).
async fn attention_matches_reference() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(11);
    for (tq, heads, d, kv, causal) in sweep() {
        let (tmax, q_pos0) = if causal { (kv + 7, kv - tq) } else { (kv, 0) };
        case(&ctx, &mut rng, tq, heads, d, kv, tmax, causal, q_pos0, Kernel::Auto).await?;
    }
    Ok(())
}

/// Both kernel paths on the same shapes: one invocation per row, and several key splits merged by `combine`
/// (including chunks that fall entirely past a causal row's end).
async fn attention_split_and_single_pass_agree() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(12);
    for (tq, heads, d, kv, causal) in [
        (1, (4, 2), 64, 1100, true),
        (17, (3, 1), 8, 300, true),
        (3, (2, 2), 80, 64, false),
        (17, (4, 2), 16, 17, true),
    ] {
        let q_pos0 = if causal { kv - tq } else { 0 };
        for splits in [1, 2, 3, 7, 64] {
            case(&ctx, &mut rng, tq, heads, d, kv, kv + 1, causal, q_pos0, Kernel::Splits(splits)).await?;
        }
    }
    // long rows in one invocation (lavapipe ends loops past 65535 iterations in total) and past MAX_CHUNK
    case(&ctx, &mut rng, 1, (2, 1), 128, 8192, 8192, false, 0, Kernel::Splits(1)).await?;
    case(&ctx, &mut rng, 1, (2, 1), 8, 20000, 20000, true, 19999, Kernel::Splits(1)).await?;
    // the model shapes: SmolLM2 decode (9 q heads, 3 kv heads, D 64) and a SigLIP-like ViT block
    case(&ctx, &mut rng, 1, (9, 3), 64, 2049, 4096, true, 2048, Kernel::Auto).await?;
    case(&ctx, &mut rng, 64, (12, 12), 64, 64, 64, false, 0, Kernel::Auto).await?;
    Ok(())
}

/// The key-parallel subgroup kernel (what GPUs run for decode and prompts), forced wherever the adapter's
/// subgroups have one known size (lavapipe too): the reference sweep's shapes, head dims above and below the
/// subgroup size, key splits with chunks past a causal row's end and the plan `attention` picks. Elsewhere it
/// must refuse with MissingFeature.
async fn attention_subgroup_kernel() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(14);
    let usable = |s: &u32| ctx.caps.subgroups && s.is_power_of_two() && (4..=128).contains(s);
    let Some(sg) = ctx.caps.subgroup_size.filter(usable) else {
        let q = ctx.upload_f32(&[0.0; 8], &[1, 1, 8]).map_err(e)?;
        let p = AttnParams { causal: false, scale: 1.0, kv_len: 1, q_pos0: 0 };
        let mut rec = Recorder::new(&ctx);
        return match at::attention_subgroups(&mut rec, &q, &q, &q, &p, AttnPlan::with_splits(1, 1)) {
            Err(webvlm::Error::MissingFeature { .. }) => Ok(()),
            other => Err(format!("without a known subgroup size: expected MissingFeature, got {:?}", other.err())),
        };
    };
    for (tq, heads, d, kv, causal) in sweep() {
        let q_pos0 = if causal { kv - tq } else { 0 };
        let plan = AttnPlan::subgroups(tq, heads.0, kv, sg as usize);
        case(&ctx, &mut rng, tq, heads, d, kv, kv + 7, causal, q_pos0, Kernel::Subgroups(plan.n_split)).await?;
    }
    for (tq, heads, d, kv, causal) in
        [(1, (4, 2), 64, 1100, true), (17, (3, 1), 8, 300, true), (3, (9, 3), 128, 70, false)]
    {
        let q_pos0 = if causal { kv - tq } else { 0 };
        for splits in [1, 3, 64] {
            case(&ctx, &mut rng, tq, heads, d, kv, kv + 1, causal, q_pos0, Kernel::Subgroups(splits)).await?;
        }
    }
    // SmolLM2 decode through the cache
    let plan = AttnPlan::subgroups(1, 9, 2049, sg as usize);
    case(&ctx, &mut rng, 1, (9, 3), 64, 2049, 4096, true, 2048, Kernel::Subgroups(plan.n_split)).await?;
    Ok(())
}

/// Bidirectional attention as GEMMs (what CPU adapters run for the ViT): odd Tq, head groups that split the
/// score budget, a cache with NaN rows past kv_len, head dims 4..128; and what it refuses.
async fn attention_as_gemms() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(14);
    for (tq, h, d, kv, tmax) in [(1, 1, 4, 4, 4), (17, 3, 8, 36, 40), (64, 12, 64, 64, 64), (33, 2, 128, 100, 101)] {
        case(&ctx, &mut rng, tq, (h, h), d, kv, tmax, false, 0, Kernel::Gemm).await?;
    }
    // 1024 × 1024 scores per head: 4 heads per 16 MiB group, so 5 heads take two groups
    case(&ctx, &mut rng, 1024, (5, 5), 8, 1024, 1024, false, 0, Kernel::Gemm).await?;
    let t = |shape: &[usize]| ctx.zeros(shape, webvlm::gpu::DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);
    let refused = [
        ("causal", t(&[8, 2, 8]), t(&[8, 2, 8]), AttnParams { causal: true, scale: 1.0, kv_len: 8, q_pos0: 0 }),
        ("grouped heads", t(&[8, 4, 8]), t(&[8, 2, 8]), AttnParams { causal: false, scale: 1.0, kv_len: 8, q_pos0: 0 }),
        ("kv_len % 4", t(&[8, 2, 8]), t(&[8, 2, 8]), AttnParams { causal: false, scale: 1.0, kv_len: 7, q_pos0: 0 }),
        // one head's scores past the 16 MiB budget, and rows longer than one invocation's loops may walk
        (
            "scores",
            t(&[2100, 1, 4]),
            t(&[2100, 1, 4]),
            AttnParams { causal: false, scale: 1.0, kv_len: 2100, q_pos0: 0 },
        ),
        ("keys", t(&[1, 1, 4]), t(&[16388, 1, 4]), AttnParams { causal: false, scale: 1.0, kv_len: 16388, q_pos0: 0 }),
    ];
    for (what, q, kv, p) in refused {
        match at::attention_gemm(&mut rec, &q, &kv, &kv, &p) {
            Err(webvlm::Error::Shape { .. }) => {}
            other => return Err(format!("{what}: expected a shape error, got {other:?}")),
        }
    }
    Ok(())
}

/// Prefill then decode through the cache: write_kv of the prompt, attention, write_kv of one token, attention,
/// all recorded into one submission each, against the reference on the same cache contents.
async fn kv_cache_prefill_then_decode() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(13);
    let (hq, hkv, d, tmax, t0) = (6, 2, 16, 40, 11);
    let scale = 0.25;
    let kc = ctx.zeros(&[tmax, hkv, d], webvlm::gpu::DType::F32).map_err(e)?;
    let vc = ctx.zeros(&[tmax, hkv, d], webvlm::gpu::DType::F32).map_err(e)?;
    let mut k_all = vec![0f32; tmax * hkv * d];
    let mut v_all = vec![0f32; tmax * hkv * d];
    let mut pos = 0;
    for t in [t0, 1, 1, 5] {
        let q = rng.normal_vec(t * hq * d, 1.0);
        let kn = rng.normal_vec(t * hkv * d, 1.0);
        let vn = rng.normal_vec(t * hkv * d, 1.0);
        k_all[pos * hkv * d..][..kn.len()].copy_from_slice(&kn);
        v_all[pos * hkv * d..][..vn.len()].copy_from_slice(&vn);
        let (tqg, tk, tv) = (
            ctx.upload_f32(&q, &[t, hq, d]).map_err(e)?,
            ctx.upload_f32(&kn, &[t, hkv, d]).map_err(e)?,
            ctx.upload_f32(&vn, &[t, hkv, d]).map_err(e)?,
        );
        let p = AttnParams { causal: true, scale, kv_len: pos + t, q_pos0: pos };
        let mut rec = Recorder::new(&ctx);
        at::write_kv(&mut rec, &kc, &tk, pos).map_err(e)?;
        at::write_kv(&mut rec, &vc, &tv, pos).map_err(e)?;
        let out = at::attention(&mut rec, &tqg, &kc, &vc, &p).map_err(e)?;
        rec.submit().map_err(e)?;
        let got = ctx.read_f32(&out).await.map_err(e)?;
        let want = at::cpu_attention(&q, &k_all, &v_all, t, hq, hkv, d, &p);
        check_close(&format!("cached attention at pos {pos} (+{t})"), &got, &want, 2e-5, 2e-4)?;
        pos += t;
    }
    let cached = ctx.read_f32(&kc).await.map_err(e)?;
    check_close("k cache contents", &cached, &k_all, 0.0, 0.0)?;
    Ok(())
}

async fn attention_errors_are_typed() -> Result<(), String> {
    use webvlm::Error;
    let ctx = common::ctx().await;
    let t = |shape: &[usize]| ctx.zeros(shape, webvlm::gpu::DType::F32).unwrap();
    let p = |kv_len, causal, q_pos0| AttnParams { causal, scale: 1.0, kv_len, q_pos0 };
    let mut rec = Recorder::new(&ctx);
    let (q, k) = (t(&[2, 4, 8]), t(&[10, 2, 8]));
    let cases: Vec<(&str, webvlm::Result<_>)> = vec![
        ("q not 3-D", at::attention(&mut rec, &t(&[2, 32]), &k, &k, &p(5, false, 0))),
        ("Hq % Hkv != 0", at::attention(&mut rec, &t(&[2, 3, 8]), &k, &k, &p(5, false, 0))),
        ("head dims differ", at::attention(&mut rec, &t(&[2, 4, 16]), &k, &k, &p(5, false, 0))),
        ("v shape != k shape", at::attention(&mut rec, &q, &k, &t(&[9, 2, 8]), &p(5, false, 0))),
        (
            "head dim not a multiple of 4",
            at::attention(&mut rec, &t(&[2, 4, 6]), &t(&[10, 2, 6]), &t(&[10, 2, 6]), &p(5, false, 0)),
        ),
        (
            "head dim > 128",
            at::attention(&mut rec, &t(&[1, 2, 132]), &t(&[4, 2, 132]), &t(&[4, 2, 132]), &p(4, false, 0)),
        ),
        ("kv_len > Tmax", at::attention(&mut rec, &q, &k, &k, &p(11, false, 0))),
        ("kv_len = 0", at::attention(&mut rec, &q, &k, &k, &p(0, false, 0))),
        ("causal queries past kv_len", at::attention(&mut rec, &q, &k, &k, &p(5, true, 4))),
    ];
    for (what, r) in cases {
        match r {
            Err(Error::Shape { op: "attention", .. }) => {}
            other => return Err(format!("{what}: expected a Shape error, got {other:?}")),
        }
    }
    match at::write_kv(&mut rec, &k, &t(&[3, 2, 8]), 8) {
        Err(Error::ContextOverflow { tokens: 11, context: 10 }) => {}
        other => return Err(format!("write_kv past Tmax: expected ContextOverflow, got {other:?}")),
    }
    match at::write_kv(&mut rec, &k, &t(&[3, 1, 16]), 0) {
        Err(Error::Shape { op: "write_kv", .. }) => {}
        other => return Err(format!("write_kv with other head layout: expected Shape, got {other:?}")),
    }
    if !rec.is_empty() {
        return Err("failed ops must record nothing".into());
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(
        attention_matches_reference,
        attention_split_and_single_pass_agree,
        attention_subgroup_kernel,
        kv_cache_prefill_then_decode,
        attention_as_gemms,
        attention_errors_are_typed
    );
}
