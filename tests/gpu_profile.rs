//! GPU memory accounting of the buffer pool, and GPU timestamps per kernel (the profiler behind
//! `webvlm bench --profile`). Native only: profiling waits for each submission.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use webvlm::gpu::{DType, GpuContext, GpuOptions, Recorder};
use webvlm::ops::elementwise as ew;

#[test]
fn pool_counts_the_memory_it_holds() {
    let ctx = pollster::block_on(common::ctx());
    let s0 = ctx.pool_stats();
    let w = ctx.weight_uninit(&[1000], DType::F32, 0).unwrap(); // exact: 4000 bytes
    let a = ctx.empty(&[1000], DType::F32).unwrap(); // pooled: 4096-byte class
    let s1 = ctx.pool_stats();
    assert_eq!(s1.held_bytes - s0.held_bytes, 4000 + 4096);
    assert_eq!(s1.live_bytes - s0.live_bytes, 4000 + 4096);
    drop(a); // parked in the pool: still held, no longer live
    let s2 = ctx.pool_stats();
    assert_eq!(s2.held_bytes, s1.held_bytes);
    assert_eq!(s2.live_bytes, s1.live_bytes - 4096);
    assert_eq!(s2.cached_bytes - s0.cached_bytes, 4096);
    let b = ctx.empty(&[1024], DType::F32).unwrap(); // the same class: reused, nothing new held
    assert_eq!(ctx.pool_stats().held_bytes, s1.held_bytes);
    drop(b);
    drop(w); // weights are destroyed on drop
    assert_eq!(ctx.pool_stats().held_bytes, s1.held_bytes - 4000);
    ctx.trim_pool();
    let s3 = ctx.pool_stats();
    assert_eq!(s3.held_bytes, s0.held_bytes - s0.cached_bytes);
    assert!(s3.peak_held_bytes >= s1.held_bytes);
}

/// A request takes the smallest parked buffer that holds it and is at most twice its size; a request no parked
/// buffer serves first destroys parked buffers that could not serve it (smaller, or over twice its size), largest
/// first, up to its own size: the memory held stays about the largest phase's working set, not the sum of all.
#[test]
fn pool_fits_requests_and_trades_unfit_buffers() {
    let ctx = pollster::block_on(common::ctx());
    ctx.trim_pool();
    let held = || ctx.pool_stats().held_bytes;
    let (a, b) = (ctx.empty(&[2048], DType::F32).unwrap(), ctx.empty(&[4096], DType::F32).unwrap()); // 8, 16 KiB
    let h0 = held();
    drop((a, b));
    // 12 KiB: the 16 KiB buffer fits (≤ 2 ×), nothing new is held
    let c = ctx.empty(&[3072], DType::F32).unwrap();
    assert_eq!(c.buf.alloc_bytes(), 16384);
    assert_eq!(held(), h0);
    // 64 KiB: the parked 8 KiB cannot serve it and is given back before the new buffer is made
    let released = ctx.pool_stats().released;
    let d = ctx.empty(&[16384], DType::F32).unwrap();
    assert_eq!(ctx.pool_stats().released, released + 1);
    assert_eq!(held(), h0 - 8192 + 65536);
    drop((c, d));
    // 4 KiB: 64 KiB and 16 KiB are both over twice its size; the largest goes, 16 KiB stays parked
    let e = ctx.empty(&[1024], DType::F32).unwrap();
    assert_eq!(held(), h0 - 8192 + 4096); // h0 held the 16 KiB buffer already
    assert_eq!(ctx.pool_stats().cached_bytes, 16384);
    // a request the parked 16 KiB serves takes it even though a smaller live buffer exists
    let f = ctx.empty(&[2560], DType::F32).unwrap();
    assert_eq!((f.buf.alloc_bytes(), ctx.pool_stats().cached_bytes), (16384, 0));
    drop((e, f));
}

#[test]
fn profiling_needs_timestamps() {
    let ctx = GpuContext::new_blocking(GpuOptions { allow_timestamps: false, ..GpuOptions::default() }).unwrap();
    let e = ctx.start_profiling().unwrap_err().to_string();
    assert!(e.contains("timestamp-query"), "{e}");
    assert!(!ctx.profiling());
}

#[test]
fn profile_times_each_kernel_and_leaves_results_alone() {
    let ctx = GpuContext::new_blocking(GpuOptions { allow_timestamps: true, ..GpuOptions::default() }).unwrap();
    if !ctx.caps.timestamps {
        // the adapter lacks TIMESTAMP_QUERY: profiling must say so instead of returning an empty profile
        let e = ctx.start_profiling().unwrap_err().to_string();
        assert!(e.contains("timestamp-query") && e.contains(&ctx.caps.adapter_name), "{e}");
        eprintln!("{} offers no timestamp queries; only the refusal was checked", ctx.caps.adapter_name);
        return;
    }
    let n = 1 << 20;
    let x: Vec<f32> = (0..n).map(|i| (i % 97) as f32 - 48.0).collect();
    let t = ctx.upload_f32(&x, &[n]).unwrap();
    ctx.start_profiling().unwrap();
    let mut rec = Recorder::new(&ctx);
    let a = ew::scale(&mut rec, &t, 2.0).unwrap();
    let b = ew::scale(&mut rec, &a, 0.5).unwrap();
    let c = ew::unary(&mut rec, ew::Unary::Silu, &b).unwrap();
    rec.submit().unwrap();
    let p = ctx.stop_profiling();
    assert!(!ctx.profiling());
    // the timed passes compute the same thing
    let got = pollster::block_on(ctx.read_f32(&c)).unwrap();
    let want = ew::cpu_unary(ew::Unary::Silu, &x);
    webvlm::testing::check_close("silu(scale(scale(x)))", &got, &want, 1e-6, 1e-5).unwrap();
    assert_eq!(p.submissions, 1);
    assert_eq!(p.untimed_dispatches, 0);
    let dispatches: u64 = p.kernels.iter().map(|k| k.dispatches).sum();
    assert_eq!(dispatches, 3, "{:?}", p.kernels);
    assert_eq!(p.kernels.len(), 2, "scale twice, silu once: {:?}", p.kernels);
    let scale = p.kernels.iter().find(|k| k.dispatches == 2).unwrap();
    assert!(scale.kernel.starts_with("elementwise:"), "{:?}", p.kernels);
    // 1 Mi elements read and written: not free, and not seconds either
    for k in &p.kernels {
        assert!(k.gpu_ms > 0.0 && k.gpu_ms < 5000.0, "{k:?}");
    }
    assert!((p.gpu_ms - p.kernels.iter().map(|k| k.gpu_ms).sum::<f64>()).abs() < 1e-9);
    // and once stopped, submissions are not timed
    let mut rec = Recorder::new(&ctx);
    ew::scale(&mut rec, &t, 3.0).unwrap();
    rec.submit().unwrap();
    assert_eq!(ctx.stop_profiling().submissions, 0);
}

#[test]
fn a_submission_recycles_the_activations_it_no_longer_names() {
    let ctx = pollster::block_on(common::ctx());
    let n = 1 << 18; // 1 MiB of f32
    let x: Vec<f32> = (0..n).map(|i| (i % 13) as f32 - 6.0).collect();
    let t = ctx.upload_f32(&x, &[n]).unwrap();
    ctx.trim_pool();
    let before = ctx.pool_stats();
    let mut rec = Recorder::new(&ctx);
    // 40 ops in one submission, each intermediate dropped once the next op has read it; one kept midway
    let mut cur = ew::scale(&mut rec, &t, 1.0).unwrap();
    let mut kept = None;
    for i in 0..40 {
        cur = ew::scale(&mut rec, &cur, if i % 2 == 0 { 2.0 } else { 0.25 }).unwrap();
        if i == 20 {
            kept = Some(cur.clone());
        }
    }
    let reissued = rec.reissued();
    rec.submit().unwrap();
    // the chain needs two live buffers at a time (input and output), plus the one kept
    let grown = ctx.pool_stats().peak_held_bytes - before.held_bytes;
    assert!(grown <= 4 * (n as u64 * 4), "held {grown} more bytes for a 40-op chain of {} bytes", n * 4);
    assert!(reissued >= 35, "only {reissued} outputs were recycled");
    // 20 × (×2 ×0.25) = ×2^-20 exactly; the kept tensor (after op 20: 11 × 2, 10 × 0.25) = ×2^-9, and the
    // later ops, which reused buffers, did not write into it
    let got = pollster::block_on(ctx.read_f32(&cur)).unwrap();
    let want: Vec<f32> = x.iter().map(|v| v * 2f32.powi(-20)).collect();
    webvlm::testing::check_close("chain", &got, &want, 0.0, 0.0).unwrap();
    let got = pollster::block_on(ctx.read_f32(kept.as_ref().unwrap())).unwrap();
    let want: Vec<f32> = x.iter().map(|v| v * 2f32.powi(-9)).collect();
    webvlm::testing::check_close("kept", &got, &want, 0.0, 0.0).unwrap();
}

/// A recycled buffer handed out but never bound (an empty result, an op that failed after allocating) must not
/// reach the context's pool before the submission: an upload there (`queue.write_buffer`, which lands before the
/// whole submission) would be overwritten by the earlier command that wrote the buffer.
#[test]
fn an_unbound_recycled_buffer_stays_out_of_the_pool_until_the_submission() {
    let ctx = pollster::block_on(common::ctx());
    let n = 64;
    let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let a = ctx.upload_f32(&x, &[n]).unwrap();
    ctx.trim_pool();
    let mut rec = Recorder::new(&ctx);
    let b = ew::scale(&mut rec, &a, 2.0).unwrap(); // writes b
    let c = ew::scale(&mut rec, &b, 3.0).unwrap(); // reads b
    drop(b);
    let unused = rec.empty(&[n], DType::F32).unwrap(); // b's buffer again, never bound
    assert_eq!(rec.reissued(), 1);
    drop(unused);
    let u = ctx.upload_f32(&[9.0; 64], &[n]).unwrap();
    let d = ew::scale(&mut rec, &u, 1.0).unwrap();
    rec.submit().unwrap();
    let got = |t| pollster::block_on(ctx.read_f32(t)).unwrap();
    assert_eq!(got(&u), vec![9.0; 64], "the upload was overwritten by an earlier command of the recording");
    assert_eq!(got(&d), vec![9.0; 64]);
    assert_eq!(got(&c), x.iter().map(|v| v * 6.0).collect::<Vec<_>>());
}
