//! GPU token selection against the CPU references: argmax (with ties), sampling (exact token equality over many
//! random logits, settings and uniform draws, skipping draws within float rounding of a decision boundary),
//! masked and constant logits, the repetition penalty, and typed errors.

mod common;

use webvlm::gpu::{GpuContext, Recorder, Tensor};
use webvlm::ops::sample::{self as sm, SampleParams};
use webvlm::testing::Rng;

#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// Logits shaped like a language model's: a normal bulk plus a few strong candidates.
fn logits(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.normal_vec(n, 2.0);
    for _ in 0..(n / 500).max(1) {
        let i = rng.usize(0, n - 1);
        x[i] += rng.range(4.0, 12.0);
    }
    x
}

async fn run_u32(ctx: &GpuContext, f: impl FnOnce(&mut Recorder) -> webvlm::Result<Tensor>) -> Result<u32, String> {
    let mut rec = Recorder::new(ctx);
    let out = f(&mut rec).map_err(e)?;
    rec.submit().map_err(e)?;
    Ok(ctx.read_u32(&out).await.map_err(e)?[0])
}

async fn argmax_matches_reference_and_breaks_ties_low() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(21);
    for (t, v) in [(1, 1), (1, 7), (3, 1000), (1, 32769), (2, 151_655)] {
        let mut x = logits(&mut rng, t * v);
        let last = &x[(t - 1) * v..];
        let want = sm::cpu_argmax(last);
        let tx = ctx.upload_f32(&x, &[t, v]).map_err(e)?;
        let got = run_u32(&ctx, |r| sm::argmax(r, &tx)).await?;
        if got != want {
            return Err(format!("argmax [{t},{v}]: got {got}, want {want}"));
        }
        if v > 10 {
            // the same maximum at two places (in different chunks): the lower index wins
            let row = &mut x[(t - 1) * v..];
            let (a, b) = (v / 3, 2 * v / 3);
            row[a] = 100.0;
            row[b] = 100.0;
            let tx = ctx.upload_f32(&x, &[t, v]).map_err(e)?;
            let got = run_u32(&ctx, |r| sm::argmax(r, &tx)).await?;
            if got != a as u32 {
                return Err(format!("argmax tie [{t},{v}]: got {got}, want {a}"));
            }
        }
    }
    Ok(())
}

async fn sample_matches_reference() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(22);
    let mut checked = 0;
    let mut skipped = 0;
    for (t, v, draws) in [(1, 5, 40), (2, 300, 60), (1, 49_152, 60), (1, 151_655, 40)] {
        let x = logits(&mut rng, t * v);
        let tx = ctx.upload_f32(&x, &[t, v]).map_err(e)?;
        let last = &x[(t - 1) * v..];
        for n in 0..draws {
            let p = SampleParams {
                temperature: [0.7, 1.0, 1.6][n % 3],
                top_k: [0, 5, 50, 256, 2][n % 5],
                top_p: [1.0, 0.9, 0.5, 0.97][n % 4],
                uniform: rng.f32(),
            };
            let (want, margin) = sm::cpu_sample_with_margin(last, &p);
            if margin < 1e-4 {
                skipped += 1;
                continue;
            }
            let got = run_u32(&ctx, |r| sm::sample(r, &tx, &p)).await?;
            if got != want {
                return Err(format!(
                    "sample [{t},{v}] {p:?}: got {got} (logit {}), want {want} (logit {}), margin {margin:e}",
                    last.get(got as usize).copied().unwrap_or(f32::NAN),
                    last[want as usize]
                ));
            }
            checked += 1;
        }
    }
    if skipped * 10 > checked {
        return Err(format!("too many draws near a boundary: {skipped} skipped, {checked} checked"));
    }
    Ok(())
}

/// top_k = 1 and a vanishing nucleus both reduce to argmax (the second through the full sampling path).
async fn greedy_limits_equal_argmax() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(23);
    for v in [3, 4097, 151_655] {
        let x = logits(&mut rng, v);
        let tx = ctx.upload_f32(&x, &[v]).map_err(e)?;
        let am = run_u32(&ctx, |r| sm::argmax(r, &tx)).await?;
        for (top_k, top_p) in [(1, 1.0), (0, 1e-6), (40, 1e-6)] {
            let p = SampleParams { temperature: 1.0, top_k, top_p, uniform: rng.f32() };
            let got = run_u32(&ctx, |r| sm::sample(r, &tx, &p)).await?;
            if got != am {
                return Err(format!("V={v} top_k={top_k} top_p={top_p}: sample {got} != argmax {am}"));
            }
        }
    }
    Ok(())
}

/// Masked vocabularies (-inf everywhere but a few tokens) and a constant row (every logit tied, more ties than the
/// candidate buffer holds): the reference's order (value, then index) must still come out.
async fn masked_and_constant_logits() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(24);
    let v = 50_000;
    let mut x = vec![f32::NEG_INFINITY; v];
    for _ in 0..10 {
        x[rng.usize(0, v - 1)] = rng.range(-3.0, 3.0);
    }
    let flat = vec![0.25f32; 20_000];
    for (name, row) in [("masked", &x), ("constant", &flat)] {
        let tx = ctx.upload_f32(row, &[row.len()]).map_err(e)?;
        for n in 0..12 {
            let p = SampleParams {
                temperature: 1.0,
                top_k: [0, 50, 3][n % 3],
                top_p: [1.0, 0.8][n % 2],
                uniform: rng.f32(),
            };
            let (want, margin) = sm::cpu_sample_with_margin(row, &p);
            if margin < 1e-4 {
                continue;
            }
            let got = run_u32(&ctx, |r| sm::sample(r, &tx, &p)).await?;
            if got != want {
                return Err(format!("{name} {p:?}: got {got}, want {want}"));
            }
        }
    }
    Ok(())
}

async fn repetition_penalty_matches_reference() -> Result<(), String> {
    let ctx = common::ctx().await;
    let mut rng = Rng::new(25);
    let (t, v) = (2, 1000);
    let x = rng.vec(t * v, -5.0, 5.0);
    // repeats, and ids past the vocabulary (ignored)
    let mut hist: Vec<u32> = (0..300).map(|_| rng.usize(0, v - 1) as u32).collect();
    hist.extend_from_slice(&[hist[0], hist[0], hist[7], v as u32, u32::MAX]);
    let tx = ctx.upload_f32(&x, &[t, v]).map_err(e)?;
    // the buffer holds more ids than the history's length: those past it (absent from the history) stay as they are
    let past: Vec<u32> = (0..v as u32).filter(|i| !hist.contains(i)).take(5).collect();
    let th = ctx.upload_u32(&[hist.as_slice(), &past].concat(), &[hist.len() + past.len()]).map_err(e)?;
    let mut rec = Recorder::new(&ctx);
    let out = sm::repetition_penalty(&mut rec, &tx, &th, hist.len(), 1.3).map_err(e)?;
    rec.submit().map_err(e)?;
    let got = ctx.read_f32(&out).await.map_err(e)?;
    let mut want = x.clone();
    want[v..].copy_from_slice(&sm::cpu_repetition_penalty(&x[v..], &hist, 1.3));
    webvlm::testing::check_close("repetition_penalty", &got, &want, 0.0, 1e-6)?;
    let unchanged = ctx.read_f32(&tx).await.map_err(e)?;
    webvlm::testing::check_close("repetition_penalty input", &unchanged, &x, 0.0, 0.0)?;
    Ok(())
}

async fn sample_errors_are_typed() -> Result<(), String> {
    use webvlm::Error;
    let ctx = common::ctx().await;
    let x = ctx.upload_f32(&[0.0; 24], &[2, 3, 4]).map_err(e)?;
    let ok = ctx.upload_f32(&[0.0; 12], &[12]).map_err(e)?;
    let ids = ctx.upload_u32(&[1, 2], &[2]).map_err(e)?;
    let sp = |top_k, top_p, uniform| SampleParams { temperature: 1.0, top_k, top_p, uniform };
    let mut rec = Recorder::new(&ctx);
    let shape = [
        ("argmax of 3-D", sm::argmax(&mut rec, &x).err()),
        ("sample of 3-D", sm::sample(&mut rec, &x, &sp(0, 1.0, 0.5)).err()),
        ("argmax of u32", sm::argmax(&mut rec, &ids).err()),
        ("3 ids of a history of 2", sm::repetition_penalty(&mut rec, &ok, &ids, 3, 1.3).err()),
    ];
    for (what, r) in shape {
        if !matches!(r, Some(Error::Shape { .. } | Error::UnsupportedDtype { .. })) {
            return Err(format!("{what}: expected a Shape/UnsupportedDtype error, got {r:?}"));
        }
    }
    let config = [
        ("top_k > 256", sm::sample(&mut rec, &ok, &sp(257, 1.0, 0.5)).err()),
        ("uniform = 1", sm::sample(&mut rec, &ok, &sp(0, 1.0, 1.0)).err()),
        ("top_p = 0", sm::sample(&mut rec, &ok, &sp(0, 0.0, 0.5)).err()),
        ("penalty 0", sm::repetition_penalty(&mut rec, &ok, &ids, 2, 0.0).err()),
    ];
    for (what, r) in config {
        if !matches!(r, Some(Error::Config(_))) {
            return Err(format!("{what}: expected a Config error, got {r:?}"));
        }
    }
    if !rec.is_empty() {
        return Err("failed ops must record nothing".into());
    }
    Ok(())
}

mod run {
    crate::gpu_tests!(
        argmax_matches_reference_and_breaks_ties_low,
        sample_matches_reference,
        greedy_limits_equal_argmax,
        masked_and_constant_logits,
        repetition_penalty_matches_reference,
        sample_errors_are_typed
    );
}
