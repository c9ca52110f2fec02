//! Throughput measurement shared by the benchmark programs (`kernel_bench`, `webvlm bench`): timing of recorded
//! dispatches in one submission, and the copy kernel whose GB/s is the bandwidth roofline the GEMV kernels and
//! decode are compared with on the same adapter. Native only (blocking device polls).

use std::time::Instant;

use super::{grid_1d, DType, GpuContext, PipelineKey, Recorder};
use crate::error::{Error, Result};

/// The median of `v` (upper median for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Seconds per call of `record` (which records one dispatch): calibrates the calls per submission to `target_s`,
/// runs one submission of that length untimed (a GPU's clocks rise under sustained load), then returns the
/// median and the best over `reps` submissions, and the call count used. The best is the estimate to trust on a
/// shared machine (other processes only ever slow a run down).
pub fn time_dispatches(
    ctx: &GpuContext,
    reps: usize,
    target_s: f64,
    record: &dyn Fn(&mut Recorder) -> Result<()>,
) -> Result<(f64, f64, usize)> {
    let run = |count: usize| -> Result<f64> {
        let mut rec = Recorder::new(ctx);
        for _ in 0..count {
            record(&mut rec)?;
        }
        let t = Instant::now();
        rec.submit()?;
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| crate::Error::Other(format!("device poll: {e}")))?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(1)?; // warm-up: compile, allocate
    let one = run(1)?;
    let count = ((target_s / one.max(1e-6)) as usize).clamp(1, 500);
    run(count)?;
    let times: Vec<f64> = (0..reps.max(1)).map(|_| run(count)).collect::<Result<_>>()?;
    let best = times.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok((median(times) / count as f64, best / count as f64, count))
}

/// The copy kernel (`shaders/copy.wgsl`, vec4 loads and stores) over a `mib` MiB buffer: (GB/s median, GB/s
/// best, bytes per dispatch, dispatches per submission), counting bytes read + written.
pub fn copy_gbps(ctx: &GpuContext, mib: usize, reps: usize, target_s: f64) -> Result<(f64, f64, usize, usize)> {
    bandwidth(ctx, "copy", mib, reps, target_s)
}

/// The read kernel (`shaders/copy.wgsl` `read_sum`: every vec4 of a `mib` MiB buffer read once, nothing stored), the
/// yardstick closer to a GEMV's traffic where stores cost more than loads (CPU adapters): as [`copy_gbps`],
/// counting bytes read.
pub fn read_gbps(ctx: &GpuContext, mib: usize, reps: usize, target_s: f64) -> Result<(f64, f64, usize, usize)> {
    bandwidth(ctx, "read_sum", mib, reps, target_s)
}

/// The bytes of a `mib` MiB buffer for [`copy_gbps`] / [`read_gbps`], checked before anything is allocated: no
/// overflow, a vec4 count that fits the kernels' u32, and a size the adapter can bind (a huge `mib` would otherwise
/// abort on the host allocation). Callers that time other work first check it up front.
pub fn bandwidth_bytes(ctx: &GpuContext, mib: usize) -> Result<usize> {
    let bytes = mib.checked_mul(1 << 20).filter(|&b| b > 0 && b / 16 <= u32::MAX as usize).ok_or_else(|| {
        Error::Config(format!("bandwidth buffer of {mib} MiB: must be 1 MiB .. 64 GiB, within the adapter's limits"))
    })?;
    ctx.check_binding(&format!("the bandwidth kernels' buffer of {mib} MiB"), bytes as u64)?;
    Ok(bytes)
}

fn bandwidth(
    ctx: &GpuContext,
    entry: &'static str,
    mib: usize,
    reps: usize,
    target_s: f64,
) -> Result<(f64, f64, usize, usize)> {
    const WG: u32 = 256;
    const READS: u32 = 16;
    let n4 = bandwidth_bytes(ctx, mib)? / 16;
    let src = ctx.upload_f32(&vec![1.0f32; n4 * 4], &[n4 * 4])?;
    let dst = ctx.empty(&[n4 * 4], DType::F32)?;
    let mut key = PipelineKey::new("copy", entry).constant("WG", WG);
    let per_wg = if entry == "read_sum" {
        key = key.constant("READS", READS);
        WG * READS
    } else {
        WG
    };
    let params: [u32; 4] = [n4 as u32, 0, 0, 0];
    let grid = grid_1d((n4 as u32).div_ceil(per_wg), ctx.caps.max_workgroups_per_dim);
    let (s, best, count) = time_dispatches(ctx, reps, target_s, &|rec| {
        rec.dispatch(&key, bytemuck::bytes_of(&params), &[(&src).into(), (&dst).into()], grid)?;
        Ok(())
    })?;
    let bytes = if entry == "read_sum" { n4 * 16 } else { 2 * n4 * 16 };
    Ok((bytes as f64 / s / 1e9, bytes as f64 / best / 1e9, bytes, count))
}
