//! Row kernels (RMSNorm, LayerNorm, softmax), RoPE (both layouts) and embedding lookup (f32, f16, Q8_0, Q4_0,
//! Q4_1) against their CPU references on random inputs of odd sizes.

mod common;

use webvlm::gpu::{DType, Recorder};
use webvlm::loader::quant;
use webvlm::ops::norm::NormKernel;
use webvlm::ops::{embedding, matmul as mm, norm, rope, softmax};
use webvlm::testing::{check_close, Rng};

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// Both kernels (a workgroup per row; one invocation per row where C % 4 == 0) against the f64 references;
/// 70 rows: more than one workgroup of the per-row kernel.
async fn norms() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(3);
    let cases = [(1usize, 1usize), (2, 3), (7, 64), (5, 129), (3, 576), (1, 1000), (70, 12)];
    for (&(r, c), kernel) in
        cases.iter().flat_map(|rc| [NormKernel::Workgroup, NormKernel::PerRow, NormKernel::Auto].map(|k| (rc, k)))
    {
        if kernel == NormKernel::PerRow && c % 4 != 0 {
            let t = ctx.upload_f32(&vec![1.0; r * c], &[r, c]).map_err(e)?;
            let tw = ctx.upload_f32(&vec![1.0; c], &[c]).map_err(e)?;
            match norm::rms_norm_with(&mut Recorder::new(&ctx), &t, &tw, 1e-5, kernel) {
                Err(webvlm::Error::Shape { .. }) => continue,
                other => return Err(format!("per-row norm with C = {c}: expected a shape error, got {other:?}")),
            }
        }
        let x = rng.vec(r * c, -3.0, 3.0);
        let w = rng.vec(c, 0.5, 1.5);
        let b = rng.vec(c, -0.5, 0.5);
        let tx = ctx.upload_f32(&x, &[r, c]).map_err(e)?;
        let tw = ctx.upload_f32(&w, &[c]).map_err(e)?;
        let tb = ctx.upload_f32(&b, &[c]).map_err(e)?;
        let mut rec = Recorder::new(&ctx);
        let rms = norm::rms_norm_with(&mut rec, &tx, &tw, 1e-5, kernel).map_err(e)?;
        let ln = norm::layer_norm_with(&mut rec, &tx, &tw, &tb, 1e-6, kernel).map_err(e)?;
        rec.submit().map_err(e)?;
        // f32 accumulation over ≤ 1000 terms: relative error ~1e-6
        let got = ctx.read_f32(&rms).await.map_err(e)?;
        check_close(&format!("rms_norm {kernel:?} [{r},{c}]"), &got, &norm::cpu_rms_norm(&x, &w, 1e-5), 1e-5, 1e-5)?;
        let got = ctx.read_f32(&ln).await.map_err(e)?;
        check_close(
            &format!("layer_norm {kernel:?} [{r},{c}]"),
            &got,
            &norm::cpu_layer_norm(&x, &w, &b, 1e-6),
            2e-5,
            1e-5,
        )?;
    }
    let tx = ctx.upload_f32(&[1.0; 6], &[2, 3]).map_err(e)?;
    let wrong = ctx.upload_f32(&[1.0; 2], &[2]).map_err(e)?;
    let mut rec = Recorder::new(&ctx);
    if norm::rms_norm(&mut rec, &tx, &wrong, 1e-5).is_ok() {
        return Err("rms_norm with a weight of 2 for rows of 3 was accepted".into());
    }
    Ok(())
}

async fn softmax_rows() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(4);
    for &(r, c) in &[(1usize, 1usize), (3, 5), (4, 77), (2, 1031), (1, 49152), (130, 64), (2, softmax::ROWS_MAX_COLS)] {
        let x = rng.vec(r * c, -20.0, 20.0);
        let tx = ctx.upload_f32(&x, &[r, c]).map_err(e)?;
        // both kernels: a workgroup per row (GPUs) and an invocation per row (CPU adapters)
        for per_invocation in [false, true].into_iter().filter(|&p| !p || c <= softmax::ROWS_MAX_COLS) {
            let mut rec = Recorder::new(&ctx);
            let y = softmax::softmax_with(&mut rec, &tx, per_invocation).map_err(e)?;
            rec.submit().map_err(e)?;
            let got = ctx.read_f32(&y).await.map_err(e)?;
            let what = format!("softmax [{r},{c}] invocation per row: {per_invocation}");
            let want = softmax::cpu_softmax(&x, c);
            check_close(&what, &got, &want, 1e-7, 1e-5)?;
            // in place: the same values over a copy of x
            let tc = ctx.upload_f32(&x, &[r, c]).map_err(e)?;
            let mut rec = Recorder::new(&ctx);
            softmax::softmax_in_place_with(&mut rec, &tc, per_invocation).map_err(e)?;
            rec.submit().map_err(e)?;
            check_close(&format!("{what}, in place"), &ctx.read_f32(&tc).await.map_err(e)?, &want, 1e-7, 1e-5)?;
        }
    }
    // rows too long for one invocation's loops: a typed error, not a silently truncated row
    let tx = ctx.upload_f32(&vec![0.0; softmax::ROWS_MAX_COLS + 4], &[1, softmax::ROWS_MAX_COLS + 4]).map_err(e)?;
    match softmax::softmax_with(&mut Recorder::new(&ctx), &tx, true) {
        Err(webvlm::Error::Shape { .. }) => {}
        other => return Err(format!("long row per invocation: expected a shape error, got {other:?}")),
    }
    Ok(())
}

async fn rope_both_layouts() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(5);
    for &(t, h, d, pos0, theta) in &[
        (1usize, 1usize, 2usize, 0usize, 10000.0),
        (3, 4, 8, 5, 10000.0),
        (17, 3, 64, 100, 100000.0),
        (2, 9, 128, 4000, 500000.0),
    ] {
        let inv = rope::inv_freq(theta, d);
        let table = rope::cos_sin_table(&ctx, &inv, 4096 + 8).map_err(e)?;
        let x = rng.vec(t * h * d, -2.0, 2.0);
        let tx = ctx.upload_f32(&x, &[t, h, d]).map_err(e)?;
        for layout in [rope::RopeLayout::RotateHalf, rope::RopeLayout::Interleaved] {
            let mut rec = Recorder::new(&ctx);
            let y = rope::rope(&mut rec, &tx, &table, pos0, layout).map_err(e)?;
            rec.submit().map_err(e)?;
            let got = ctx.read_f32(&y).await.map_err(e)?;
            let want = rope::cpu_rope(&x, t, h, d, &inv, pos0, layout);
            check_close(&format!("rope {layout:?} t={t} h={h} d={d} pos0={pos0}"), &got, &want, 1e-6, 1e-6)?;
        }
    }
    // past the table: a typed error, not a GPU fault
    let table = rope::cos_sin_table(&ctx, &rope::inv_freq(10000.0, 8), 16).map_err(e)?;
    let tx = ctx.upload_f32(&[0.0; 8 * 4], &[4, 1, 8]).map_err(e)?;
    let mut rec = Recorder::new(&ctx);
    match rope::rope(&mut rec, &tx, &table, 14, rope::RopeLayout::RotateHalf) {
        Err(webvlm::Error::ContextOverflow { .. }) => Ok(()),
        other => Err(format!("expected ContextOverflow, got {other:?}")),
    }
}

/// The fused q/k/v kernel: q rotated like `rope`, k rotated and v copied into the cache rows pos0.., every other
/// cache row left as it was.
async fn rope_qkv_into_cache() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(7);
    for &(t, h, hkv, d, pos0) in
        &[(1usize, 1usize, 1usize, 2usize, 0usize), (1, 9, 3, 64, 37), (5, 4, 2, 8, 3), (17, 3, 3, 16, 0)]
    {
        let tmax = pos0 + t + 3;
        let inv = rope::inv_freq(10000.0, d);
        let table = rope::cos_sin_table(&ctx, &inv, tmax).map_err(e)?;
        let w = (h + 2 * hkv) * d;
        let qkv = rng.vec(t * w, -2.0, 2.0);
        let tqkv = ctx.upload_f32(&qkv, &[t, w]).map_err(e)?;
        let part = |from: usize, len: usize| -> Vec<f32> {
            (0..t).flat_map(|r| qkv[r * w + from..r * w + from + len].to_vec()).collect()
        };
        let (q, k, v) = (part(0, h * d), part(h * d, hkv * d), part((h + hkv) * d, hkv * d));
        for layout in [rope::RopeLayout::RotateHalf, rope::RopeLayout::Interleaved] {
            let what = format!("rope_qkv {layout:?} t={t} h={h} hkv={hkv} d={d} pos0={pos0}");
            let (k0, v0) = (rng.vec(tmax * hkv * d, -9.0, 9.0), rng.vec(tmax * hkv * d, -9.0, 9.0));
            let kc = ctx.upload_f32(&k0, &[tmax, hkv, d]).map_err(e)?;
            let vc = ctx.upload_f32(&v0, &[tmax, hkv, d]).map_err(e)?;
            let mut rec = Recorder::new(&ctx);
            let qr = rope::rope_qkv(&mut rec, &tqkv, &table, pos0, layout, h, &kc, &vc).map_err(e)?;
            rec.submit().map_err(e)?;
            if qr.shape != [t, h, d] {
                return Err(format!("{what}: q shape {:?}", qr.shape));
            }
            let got = ctx.read_f32(&qr).await.map_err(e)?;
            check_close(&format!("{what}: q"), &got, &rope::cpu_rope(&q, t, h, d, &inv, pos0, layout), 1e-6, 1e-6)?;
            let (row, span) = (hkv * d, pos0 * hkv * d..(pos0 + t) * hkv * d);
            let mut want_k = k0.clone();
            want_k[span.clone()].copy_from_slice(&rope::cpu_rope(&k, t, hkv, d, &inv, pos0, layout));
            let mut want_v = v0.clone();
            want_v[span].copy_from_slice(&v);
            check_close(
                &format!("{what}: k cache ({row} per row)"),
                &ctx.read_f32(&kc).await.map_err(e)?,
                &want_k,
                1e-6,
                1e-6,
            )?;
            check_close(&format!("{what}: v cache"), &ctx.read_f32(&vc).await.map_err(e)?, &want_v, 0.0, 0.0)?;
        }
    }
    // typed errors: past the cache, and a row width that is not (H + 2 Hkv) D
    let table = rope::cos_sin_table(&ctx, &rope::inv_freq(10000.0, 8), 16).map_err(e)?;
    let kc = ctx.upload_f32(&[0.0; 4 * 8], &[4, 1, 8]).map_err(e)?;
    let vc = ctx.upload_f32(&[0.0; 4 * 8], &[4, 1, 8]).map_err(e)?;
    let tx = ctx.upload_f32(&[0.0; 2 * 24], &[2, 24]).map_err(e)?;
    let mut rec = Recorder::new(&ctx);
    match rope::rope_qkv(&mut rec, &tx, &table, 3, rope::RopeLayout::RotateHalf, 1, &kc, &vc) {
        Err(webvlm::Error::ContextOverflow { .. }) => {}
        other => return Err(format!("past the cache: expected ContextOverflow, got {other:?}")),
    }
    match rope::rope_qkv(&mut rec, &tx, &table, 0, rope::RopeLayout::RotateHalf, 2, &kc, &vc) {
        Err(webvlm::Error::Shape { .. }) => Ok(()),
        other => Err(format!("wrong width: expected a shape error, got {other:?}")),
    }
}

async fn embedding_all_dtypes() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(6);
    let (vocab, dim) = (37usize, 96usize);
    let table = rng.vec(vocab * dim, -1.0, 1.0);
    let ids: Vec<u32> = (0..13).map(|_| rng.usize(0, vocab - 1) as u32).chain([0, vocab as u32 - 1]).collect();
    let tids = ctx.upload_u32(&ids, &[ids.len()]).map_err(e)?;
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1] {
        // the reference table is what the stored dtype represents exactly
        let (tt, reference) = match dtype {
            DType::F32 => (ctx.upload_f32(&table, &[vocab, dim]).map_err(e)?, table.clone()),
            DType::F16 => {
                let r: Vec<f32> = table.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
                (ctx.upload_f16(&table, &[vocab, dim]).map_err(e)?, r)
            }
            DType::BF16 => {
                let r: Vec<f32> = table.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
                (mm::upload_weight(&ctx, &table, &[vocab, dim], DType::BF16).map_err(e)?, r)
            }
            q => {
                let bytes = quant::quantize(q.try_into().map_err(e)?, &table).map_err(e)?;
                let r = quant::dequantize(q.try_into().map_err(e)?, &bytes, table.len()).map_err(e)?;
                let (qs, scales) = quant::split_gpu_layout(q.try_into().map_err(e)?, &bytes, vocab, dim).map_err(e)?;
                let off = qs.len() as u32;
                let words: Vec<u32> = qs.into_iter().chain(scales).collect();
                (ctx.upload_words(&words, &[vocab, dim], q, off, false).map_err(e)?, r)
            }
        };
        let mut rec = Recorder::new(&ctx);
        let y = embedding::embedding(&mut rec, &tt, &tids).map_err(e)?;
        rec.submit().map_err(e)?;
        let got = ctx.read_f32(&y).await.map_err(e)?;
        // dequantization is exact arithmetic (int × f16 scale); Q4_1's `q*d + m` may be fused into an fma on the
        // GPU, so allow one rounding step there
        let tol = if dtype == DType::Q4_1 { 1e-6 } else { 0.0 };
        check_close(&format!("embedding {dtype}"), &got, &embedding::cpu_embedding(&reference, dim, &ids), tol, tol)?;
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(norms, softmax_rows, rope_both_layouts, rope_qkv_into_cache, embedding_all_dtypes);
}
