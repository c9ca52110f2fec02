//! `kernel_bench`: kernel throughput on this machine's adapter, as JSON on stdout.
//!
//! - `copy`: a plain vec4 copy kernel (`shaders/copy.wgsl`), GB/s = (bytes read + bytes written) / time: the
//!   memory roofline every GEMV is compared with, measured in the same run on the same adapter.
//! - `gemv`: decode-shaped `linear` (M = 1) per weight dtype, GB/s = (weight bytes + x bytes) / time and the
//!   ratio to the copy GB/s; once with the adapter's optional features (subgroups) and once on an f32-only
//!   context (`*_plain`), so both kernel paths are measured.
//! - `gemm`: GFLOP/s (2·M·N·K / time) for ViT-shaped and prefill-shaped problems.
//!
//! Timing: many dispatches of one kernel recorded into one submission (enough for ~0.3 s), wall clock around
//! submit + wait, median of `--reps` submissions, after a warm-up submission (pipeline compilation, pool
//! allocation). GPU timestamp queries are not used (lavapipe offers none to the recorder).
//!
//! ```text
//! cargo run --bin kernel_bench -- [--only copy,gemv,gemm] [--reps 5] [--gemv-mib 48] > docs/bench-kernels.json
//! ```
//! `--only` selects sections; other kernel families add theirs (e.g. attention vs context) as new sections.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::sync::Arc;
    use std::time::Instant;

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
    use clap::Parser;
    use serde_json::{json, Value};
    use webvlm::gpu::{grid_1d, DType, GpuContext, GpuOptions, PipelineKey, Recorder, Tensor};
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

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    /// Seconds per dispatch of `record` (which records one dispatch): calibrates the dispatches per submission
    /// to `target_s`, then returns the median over `reps` submissions, and the dispatch count used.
    fn time_kernel(ctx: &GpuContext, cli: &Cli, record: &dyn Fn(&mut Recorder) -> Result<()>) -> Result<(f64, usize)> {
        let run = |count: usize| -> Result<f64> {
            let mut rec = Recorder::new(ctx);
            for _ in 0..count {
                record(&mut rec)?;
            }
            let t = Instant::now();
            rec.submit()?;
            ctx.device.poll(wgpu::PollType::wait_indefinitely())?;
            Ok(t.elapsed().as_secs_f64())
        };
        run(1)?; // warm-up: compile, allocate
        let one = run(1)?;
        let count = ((cli.target_s / one.max(1e-6)) as usize).clamp(1, 500);
        let times: Vec<f64> = (0..cli.reps.max(1)).map(|_| run(count)).collect::<Result<_>>()?;
        Ok((median(times) / count as f64, count))
    }

    fn copy_bench(ctx: &GpuContext, cli: &Cli) -> Result<Value> {
        let n4 = cli.gemv_mib * (1 << 20) / 16;
        let src = ctx.upload_f32(&vec![1.0f32; n4 * 4], &[n4 * 4])?;
        let dst = ctx.empty(&[n4 * 4], DType::F32)?;
        let key = PipelineKey::new("copy", "copy").constant("WG", 256);
        let params: [u32; 4] = [n4 as u32, 0, 0, 0];
        let grid = grid_1d((n4 as u32).div_ceil(256), ctx.caps.max_workgroups_per_dim);
        let (s, count) = time_kernel(ctx, cli, &|rec| {
            rec.dispatch(&key, bytemuck::bytes_of(&params), &[(&src).into(), (&dst).into()], grid)?;
            Ok(())
        })?;
        let bytes = 2 * n4 * 16;
        Ok(json!({
            "bytes_per_dispatch": bytes, "ms": s * 1e3, "gbps": bytes as f64 / s / 1e9, "dispatches_per_submit": count,
        }))
    }

    fn weight(ctx: &GpuContext, rng: &mut Rng, n: usize, k: usize, dtype: DType) -> Result<Tensor> {
        let data = rng.vec(n * k, -1.0, 1.0);
        Ok(mm::upload_weight(ctx, &data, &[n, k], dtype)?)
    }

    const DTYPES: [DType; 5] = [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_1];

    fn gemv_bench(ctx: &GpuContext, cli: &Cli, variant: &str, copy_gbps: Option<f64>) -> Result<Vec<Value>> {
        let mut rng = Rng::new(1);
        let mut out = Vec::new();
        let k = 2048;
        // (name, N) per dtype: the large problem has ~gemv_mib of weights whatever the dtype; the model problems
        // are SmolLM2-135M's decode matrices (MLP up/gate and the LM head, K = 576).
        for dtype in DTYPES {
            let bytes_per_row = dtype.storage_bytes(k) as usize;
            let n_big = (cli.gemv_mib << 20) / bytes_per_row / 64 * 64;
            for (name, n, k) in [("large", n_big, k), ("smollm2_mlp_up", 1536, 576), ("smollm2_lm_head", 49152, 576)] {
                let w = weight(ctx, &mut rng, n, k, dtype)?;
                let x = ctx.upload_f32(&rng.vec(k, -1.0, 1.0), &[1, k])?;
                let (s, count) = time_kernel(ctx, cli, &|rec| {
                    mm::linear_with(rec, &x, &w, None, Path::Gemv)?;
                    Ok(())
                })?;
                let bytes = w.bytes() as usize + k * 4;
                let gbps = bytes as f64 / s / 1e9;
                out.push(json!({
                    "problem": name, "variant": variant, "dtype": dtype.name(), "m": 1, "k": k, "n": n,
                    "bytes_per_dispatch": bytes, "ms": s * 1e3, "gbps": gbps,
                    "ratio_to_copy": copy_gbps.map(|c| gbps / c), "dispatches_per_submit": count,
                }));
                eprintln!("gemv {variant} {dtype} {name} N={n} K={k}: {:.3} ms {gbps:.2} GB/s", s * 1e3);
            }
        }
        Ok(out)
    }

    fn gemm_bench(ctx: &GpuContext, cli: &Cli) -> Result<Vec<Value>> {
        let mut rng = Rng::new(2);
        let mut out = Vec::new();
        let mut problems: Vec<(&str, usize, usize, usize, Vec<DType>)> = vec![
            ("vit_768", 1024, 768, 768, vec![DType::F32, DType::F16]),
            ("vit_mlp_3072", 1024, 768, 3072, vec![DType::F32, DType::F16]),
        ];
        for m in [64, 128, 256] {
            problems.push(("prefill_576x1536", m, 576, 1536, DTYPES.to_vec()));
        }
        for (name, m, k, n, dtypes) in problems {
            let x = ctx.upload_f32(&rng.vec(m * k, -1.0, 1.0), &[m, k])?;
            for dtype in dtypes {
                let w = weight(ctx, &mut rng, n, k, dtype)?;
                let (s, count) = time_kernel(ctx, cli, &|rec| {
                    mm::linear_with(rec, &x, &w, None, Path::Gemm)?;
                    Ok(())
                })?;
                let gflops = 2.0 * (m * n * k) as f64 / s / 1e9;
                out.push(json!({
                    "problem": name, "dtype": dtype.name(), "m": m, "k": k, "n": n, "ms": s * 1e3,
                    "gflops": gflops, "dispatches_per_submit": count,
                }));
                eprintln!("gemm {dtype} {name} M={m} K={k} N={n}: {:.2} ms {gflops:.2} GFLOP/s", s * 1e3);
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
                 median of {} submissions after a warm-up; per-dispatch time = submission time / dispatches",
                cli.target_s, cli.reps
            )),
        );
        let mut copy_gbps = None;
        if wants("copy") || wants("gemv") {
            let c = copy_bench(&ctx, &cli)?;
            eprintln!("copy: {:.2} GB/s", c["gbps"].as_f64().unwrap_or(0.0));
            copy_gbps = c["gbps"].as_f64();
            report.insert("copy".into(), c);
        }
        if wants("gemv") {
            let mut rows = gemv_bench(&ctx, &cli, if ctx.caps.subgroups { "subgroups" } else { "plain" }, copy_gbps)?;
            if ctx.caps.subgroups || ctx.caps.shader_f16 {
                let plain = open(GpuOptions { allow_f16: false, allow_subgroups: false, ..GpuOptions::default() })?;
                rows.extend(gemv_bench(&plain, &cli, "plain", copy_gbps)?);
            }
            report.insert("gemv".into(), Value::Array(rows));
        }
        if wants("gemm") {
            report.insert("gemm".into(), Value::Array(gemm_bench(&ctx, &cli)?));
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
