//! `kernel_bench`: kernel throughput on this machine's adapter, as JSON on stdout.
//!
//! - `copy`: a plain vec4 copy kernel (`shaders/copy.wgsl`), GB/s = (bytes read + bytes written) / time: the
//!   memory roofline every GEMV is compared with, measured in the same run on the same adapter; and `read`, the
//!   read-only kernel (`copy.wgsl` `read_sum`, GB/s = bytes read / time), the tighter yardstick where stores cost
//!   more than loads (CPU adapters: a per-lane scatter and a write-allocate read).
//! - `gemv`: decode-shaped `linear` (M = 1) per weight dtype, GB/s = (weight bytes + x bytes) / time and the
//!   ratios to the copy and read GB/s; once with the adapter's optional features (subgroups) and once on an f32-only
//!   context (`*_plain`), so both kernel paths are measured; with subgroups, quantized weights also in the
//!   subgroup GEMV's other work split (`words`: lanes over u32 words, `subgroups`: a lane per block).
//! - `gemm`: GFLOP/s (2·M·N·K / time) for ViT-shaped and prefill-shaped problems.
//!
//! Timing: many dispatches of one kernel recorded into one submission (enough for ~0.3 s), wall clock around
//! submit + wait, median of `--reps` submissions, after a warm-up submission (pipeline compilation, pool
//! allocation) and an untimed one of the timed length (a GPU's clock falls within a second of idling: an H200's
//! SM clock went to 345 MHz between problems). GPU timestamp queries are not used (lavapipe offers none to the
//! recorder).
//!
//! ```text
//! cargo run --bin kernel_bench -- [--only copy,gemv,gemm] [--reps 5] [--gemv-mib 48] > docs/bench-kernels.json
//! ```
//! `--only` selects sections; other kernel families add theirs (e.g. attention vs context) as new sections.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::Arc;

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
    use clap::Parser;
    use serde_json::{json, Value};
    use webvlm::gpu::{bench, DType, GpuContext, GpuOptions, Recorder, Tensor};
    use webvlm::ops::matmul::{self as mm, Path};
    use webvlm::testing::Rng;

    #[derive(Parser, Debug)]
    #[command(name = "kernel_bench", about = "kernel throughput (copy GB/s, GEMV GB/s, GEMM GFLOP/s) as JSON")]
    struct Cli {
        /// Comma-separated sections to run: copy, gemv, gemm (default: all).
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        /// Timed submissions per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Target seconds per timed submission (sets the dispatches per submission).
        #[arg(long, default_value_t = 0.3)]
        target_s: f64,
        /// Weight size of the GEMV problems and the copy kernel's buffer, MiB (well above the CPU's last-level
        /// cache on lavapipe, so memory, not cache, is measured).
        #[arg(long, default_value_t = 48)]
        gemv_mib: usize,
    }

    fn time_kernel(
        ctx: &GpuContext,
        cli: &Cli,
        record: &dyn Fn(&mut Recorder) -> webvlm::Result<()>,
    ) -> Result<(f64, f64, usize)> {
        Ok(bench::time_dispatches(ctx, cli.reps, cli.target_s, record)?)
    }

    /// The copy (or with `read`, the read-only) kernel's GB/s.
    fn bandwidth_bench(ctx: &GpuContext, cli: &Cli, read: bool) -> Result<Value> {
        let measure = if read { bench::read_gbps } else { bench::copy_gbps };
        let (gbps, gbps_best, bytes, count) = measure(ctx, cli.gemv_mib, cli.reps, cli.target_s)?;
        Ok(json!({
            "bytes_per_dispatch": bytes, "ms": bytes as f64 / gbps / 1e6, "ms_best": bytes as f64 / gbps_best / 1e6,
            "gbps": gbps, "gbps_best": gbps_best, "dispatches_per_submit": count,
        }))
    }

    fn weight(ctx: &GpuContext, rng: &mut Rng, n: usize, k: usize, dtype: DType) -> Result<Tensor> {
        let data = rng.vec(n * k, -1.0, 1.0);
        Ok(mm::upload_weight(ctx, &data, &[n, k], dtype)?)
    }

    const DTYPES: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1];

    fn gemv_bench(
        ctx: &GpuContext,
        cli: &Cli,
        path: Path,
        dtypes: &[DType],
        copy_gbps: Option<f64>,
        read_gbps: Option<f64>,
    ) -> Result<Vec<Value>> {
        // the GEMV's variant for a dtype on this path (shared x: quantized weights only)
        let variant = |dtype: DType| {
            let default_sg = path == Path::Gemv && mm::use_subgroup_gemv(&ctx.caps);
            let words = path == Path::GemvWords || (default_sg && mm::use_word_lanes(&ctx.caps));
            if words && dtype.is_quantized() {
                "words"
            } else if path == Path::GemvSubgroups || path == Path::GemvWords || default_sg {
                "subgroups"
            } else if dtype.is_quantized() && (path == Path::GemvSharedX || mm::gemv_shares_x(&ctx.caps).is_some()) {
                "shared_x"
            } else {
                "plain"
            }
        };
        let mut rng = Rng::new(1);
        let mut out = Vec::new();
        let k = 2048;
        // (name, N) per dtype: the large problem has ~gemv_mib of weights whatever the dtype; the model problems
        // are SmolLM2-135M's decode matrices (MLP up/gate and the LM head, K = 576).
        for &dtype in dtypes {
            let variant = variant(dtype);
            let bytes_per_row = dtype.storage_bytes(k) as usize;
            let n_big = (cli.gemv_mib << 20) / bytes_per_row / 64 * 64;
            for (name, n, k) in [("large", n_big, k), ("smollm2_mlp_up", 1536, 576), ("smollm2_lm_head", 49152, 576)] {
                let w = weight(ctx, &mut rng, n, k, dtype)?;
                let x = ctx.upload_f32(&rng.vec(k, -1.0, 1.0), &[1, k])?;
                let (s, best, count) = time_kernel(ctx, cli, &|rec| {
                    mm::linear_with(rec, &x, &w, None, path)?;
                    Ok(())
                })?;
                let bytes = w.bytes() as usize + k * 4;
                let gbps = bytes as f64 / s / 1e9;
                let gbps_best = bytes as f64 / best / 1e9;
                let ratio = copy_gbps.map(|c| gbps_best / c);
                let ratio_read = read_gbps.map(|r| gbps_best / r);
                out.push(json!({
                    "problem": name, "variant": variant, "dtype": dtype.name(), "m": 1, "k": k, "n": n,
                    "bytes_per_dispatch": bytes, "ms": s * 1e3, "ms_best": best * 1e3, "gbps": gbps,
                    "gbps_best": gbps_best, "ratio_to_copy_best": ratio, "ratio_to_read_best": ratio_read,
                    "dispatches_per_submit": count,
                }));
                eprintln!(
                    "gemv {variant} {dtype} {name} N={n} K={k}: {:.3} ms {gbps:.2} GB/s (best {gbps_best:.2}, {:.0}% of copy, {:.0}% of read)",
                    s * 1e3,
                    ratio.unwrap_or(0.0) * 100.0,
                    ratio_read.unwrap_or(0.0) * 100.0
                );
            }
        }
        Ok(out)
    }

    fn gemm_bench(ctx: &GpuContext, cli: &Cli) -> Result<Vec<Value>> {
        let mut rng = Rng::new(2);
        let mut out = Vec::new();
        let mut problems: Vec<(&str, usize, usize, usize, Vec<DType>)> = vec![
            ("vit_768", 1024, 768, 768, vec![DType::F32, DType::F16, DType::BF16]),
            ("vit_mlp_3072", 1024, 768, 3072, vec![DType::F32, DType::F16, DType::BF16]),
        ];
        for m in [64, 128, 256] {
            problems.push(("prefill_576x1536", m, 576, 1536, DTYPES.to_vec()));
        }
        for (name, m, k, n, dtypes) in problems {
            let x = ctx.upload_f32(&rng.vec(m * k, -1.0, 1.0), &[m, k])?;
            for dtype in dtypes {
                let w = weight(ctx, &mut rng, n, k, dtype)?;
                // the tiled GEMM (workgroup memory) and the barrier-free one `linear` uses on CPU adapters
                let mut variants = vec![("tiled", Path::Gemm), ("direct", Path::Direct)];
                if matches!(ctx.caps.subgroup_size, Some(4 | 8)) {
                    variants.push(("direct_subgroups", Path::DirectSubgroups));
                }
                for (variant, path) in variants {
                    let (s, best, count) = time_kernel(ctx, cli, &|rec| {
                        mm::linear_with(rec, &x, &w, None, path)?;
                        Ok(())
                    })?;
                    let flop = 2.0 * (m * n * k) as f64;
                    let (gflops, gflops_best) = (flop / s / 1e9, flop / best / 1e9);
                    out.push(json!({
                        "problem": name, "variant": variant, "dtype": dtype.name(), "m": m, "k": k, "n": n,
                        "ms": s * 1e3, "ms_best": best * 1e3, "gflops": gflops, "gflops_best": gflops_best,
                        "dispatches_per_submit": count,
                    }));
                    eprintln!(
                        "gemm {variant} {dtype} {name} M={m} K={k} N={n}: {:.2} ms {gflops:.2} GFLOP/s (best {gflops_best:.2})",
                        s * 1e3
                    );
                }
            }
        }
        Ok(out)
    }

    /// Attention vs context length (`--only attention`). Decode (Tq = 1) on SmolLM2-135M's heads (9 query, 3 kv,
    /// D 64) over a KV cache, with the default plan and with fixed key splits (1 = no split-K), reported as ms and
    /// as GB/s of K+V read; prefill (causal, Tq = kv_len) and a SigLIP-shaped ViT block (bidirectional, 12 heads)
    /// as ms and GFLOP/s (4·Tq·kv·D·Hq flops, halved under the causal mask).
    fn attention_bench(ctx: &GpuContext, cli: &Cli) -> Result<Vec<Value>> {
        use webvlm::ops::attention::{self as at, AttnParams, AttnPlan};
        let mut rng = Rng::new(3);
        let mut out = Vec::new();
        let (hq, hkv, d) = (9, 3, 64);
        for kv in [128, 512, 1024, 2048, 4096, 8192] {
            let k = ctx.upload_f32(&rng.vec(kv * hkv * d, -1.0, 1.0), &[kv, hkv, d])?;
            let v = ctx.upload_f32(&rng.vec(kv * hkv * d, -1.0, 1.0), &[kv, hkv, d])?;
            let q = ctx.upload_f32(&rng.vec(hq * d, -1.0, 1.0), &[1, hq, d])?;
            let p = AttnParams { causal: true, scale: 0.125, kv_len: kv, q_pos0: kv - 1 };
            let auto = AttnPlan::auto(1, hq, hkv, kv, ctx.caps.cpu_adapter);
            // the row kernel (an invocation per row and split), then the key-parallel subgroup kernel where the
            // adapter has one subgroup size (what `attention` takes on GPUs)
            let mut kernels: Vec<(&str, Option<usize>)> =
                [None, Some(1), Some(8), Some(32), Some(128)].into_iter().map(|s| ("rows", s)).collect();
            let sg = ctx.caps.subgroup_size.filter(|_| ctx.caps.subgroups);
            if sg.is_some() {
                kernels.extend([None, Some(1), Some(8), Some(32)].into_iter().map(|s| ("subgroups", s)));
            }
            for (kernel, splits) in kernels {
                let plan = match (kernel, splits, sg) {
                    (_, Some(n), _) => AttnPlan::with_splits(kv, n),
                    ("subgroups", None, Some(sg)) => AttnPlan::subgroups(1, hq, kv, sg as usize),
                    _ => auto,
                };
                let (s, _best, count) = time_kernel(ctx, cli, &|rec| {
                    match kernel {
                        "subgroups" => at::attention_subgroups(rec, &q, &k, &v, &p, plan)?,
                        _ => at::attention_with_plan(rec, &q, &k, &v, &p, plan)?,
                    };
                    Ok(())
                })?;
                let bytes = 2 * kv * hkv * d * 4;
                out.push(json!({
                    "problem": "decode_smollm2", "kernel": kernel, "tq": 1, "kv_len": kv, "hq": hq, "hkv": hkv,
                    "d": d, "plan": if splits.is_none() { "auto" } else { "fixed" }, "n_split": plan.n_split,
                    "ms": s * 1e3, "kv_gbps": bytes as f64 / s / 1e9, "dispatches_per_submit": count,
                }));
                eprintln!(
                    "attention decode {kernel} kv={kv} splits={} ({:?}): {:.3} ms",
                    plan.n_split,
                    splits,
                    s * 1e3
                );
            }
        }
        for (name, tq, h, causal) in [
            ("prefill_smollm2", 128, (9, 3), true),
            ("prefill_smollm2", 512, (9, 3), true),
            ("vit_siglip", 1024, (12, 12), false),
        ] {
            let (hq, hkv) = h;
            let q = ctx.upload_f32(&rng.vec(tq * hq * d, -1.0, 1.0), &[tq, hq, d])?;
            let k = ctx.upload_f32(&rng.vec(tq * hkv * d, -1.0, 1.0), &[tq, hkv, d])?;
            let v = ctx.upload_f32(&rng.vec(tq * hkv * d, -1.0, 1.0), &[tq, hkv, d])?;
            let p = AttnParams { causal, scale: 0.125, kv_len: tq, q_pos0: 0 };
            let sg = ctx.caps.subgroup_size.filter(|_| ctx.caps.subgroups);
            // what `attention` picks, then the row and subgroup kernels with their own plans
            for kernel in ["auto", "rows", "subgroups"] {
                if kernel == "subgroups" && sg.is_none() {
                    continue;
                }
                let (s, _best, count) = time_kernel(ctx, cli, &|rec| {
                    match kernel {
                        "rows" => {
                            let plan = AttnPlan::auto(tq, hq, hkv, tq, ctx.caps.cpu_adapter);
                            at::attention_with_plan(rec, &q, &k, &v, &p, plan)?
                        }
                        "subgroups" => {
                            let plan = AttnPlan::subgroups(tq, hq, tq, sg.unwrap_or(32) as usize);
                            at::attention_subgroups(rec, &q, &k, &v, &p, plan)?
                        }
                        _ => at::attention(rec, &q, &k, &v, &p)?,
                    };
                    Ok(())
                })?;
                let flops = 4.0 * (tq * tq * d * hq) as f64 / if causal { 2.0 } else { 1.0 };
                out.push(json!({
                    "problem": name, "kernel": kernel, "tq": tq, "kv_len": tq, "hq": hq, "hkv": hkv, "d": d,
                    "causal": causal, "ms": s * 1e3, "gflops": flops / s / 1e9, "dispatches_per_submit": count,
                }));
                eprintln!("attention {name} {kernel} T={tq}: {:.2} ms {:.2} GFLOP/s", s * 1e3, flops / s / 1e9);
            }
        }
        Ok(out)
    }

    fn open(opts: GpuOptions) -> Result<Arc<GpuContext>> {
        Ok(GpuContext::new_blocking(opts)?)
    }

    pub fn main() -> Result<()> {
        let cli = Cli::parse();
        let wants = |s: &str| cli.only.as_ref().is_none_or(|o| o.iter().any(|x| x == s));
        let ctx = open(GpuOptions::default())?;
        let mut report = serde_json::Map::new();
        report.insert("adapter".into(), serde_json::to_value(&ctx.caps)?);
        report.insert(
            "method".into(),
            json!(format!(
                "wall clock around submit+wait of one submission holding many dispatches of one kernel (~{} s), \
                 median and best of {} submissions after a warm-up submission of the same length; per-dispatch time = submission time / dispatches; \
                 ratio_to_copy_best = GEMV best GB/s / copy best GB/s (bytes read + written), ratio_to_read_best = GEMV best GB/s / \
                 read best GB/s (the read-only kernel: bytes read); the machine is shared: best is the estimate",
                cli.target_s, cli.reps
            )),
        );
        let (mut copy_gbps, mut read_gbps) = (None, None);
        if wants("copy") || wants("gemv") {
            for (name, read) in [("copy", false), ("read", true)] {
                let c = bandwidth_bench(&ctx, &cli, read)?;
                eprintln!(
                    "{name}: {:.2} GB/s (best {:.2})",
                    c["gbps"].as_f64().unwrap_or(0.0),
                    c["gbps_best"].as_f64().unwrap_or(0.0)
                );
                *(if read { &mut read_gbps } else { &mut copy_gbps }) = c["gbps_best"].as_f64();
                report.insert(name.into(), c);
            }
        }
        if wants("gemv") {
            // the default path for this adapter, and the others where the adapter has them (plain: no subgroups)
            let mut rows = gemv_bench(&ctx, &cli, Path::Gemv, &DTYPES, copy_gbps, read_gbps)?;
            let quantized = [DType::Q8_0, DType::Q4_0, DType::Q4_1];
            if ctx.caps.subgroups && !mm::use_subgroup_gemv(&ctx.caps) {
                rows.extend(gemv_bench(&ctx, &cli, Path::GemvSubgroups, &DTYPES, copy_gbps, read_gbps)?);
            }
            // the subgroup GEMV's other work split for quantized weights (lanes over words / a lane per block)
            if ctx.caps.subgroups {
                let other = if mm::use_subgroup_gemv(&ctx.caps) && mm::use_word_lanes(&ctx.caps) {
                    Path::GemvSubgroups
                } else {
                    Path::GemvWords
                };
                rows.extend(gemv_bench(&ctx, &cli, other, &quantized, copy_gbps, read_gbps)?);
            }
            if mm::gemv_shares_x(&ctx.caps).is_some() || (ctx.caps.subgroups && mm::use_subgroup_gemv(&ctx.caps)) {
                let plain = open(GpuOptions { allow_subgroups: false, ..GpuOptions::default() })?;
                rows.extend(gemv_bench(&plain, &cli, Path::Gemv, &DTYPES, copy_gbps, read_gbps)?);
            }
            report.insert("gemv".into(), Value::Array(rows));
        }
        if wants("gemm") {
            report.insert("gemm".into(), Value::Array(gemm_bench(&ctx, &cli)?));
        }
        if wants("attention") {
            report.insert("attention".into(), Value::Array(attention_bench(&ctx, &cli)?));
        }
        println!("{}", serde_json::to_string_pretty(&Value::Object(report))?);
        Ok(())
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    native::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
