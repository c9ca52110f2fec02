//! GPU time per kernel from timestamp queries (`webvlm bench --profile`, the `profiling` feature).
//!
//! While profiling is on, the recorder puts every dispatch in a compute pass of its own whose beginning and end
//! write a timestamp, resolves the query set into a buffer in the same command buffer and, after the submission,
//! waits for it and adds `end − begin` (in ns, times the queue's timestamp period) to the dispatch's kernel. The
//! pass per dispatch and the wait per submission perturb wall-clock figures: read a profile for where GPU time
//! goes, take tokens/s from an unprofiled run. Native only (the wait blocks); the adapter must offer
//! `TIMESTAMP_QUERY` and the context must have been opened with [`GpuOptions::allow_timestamps`].
//!
//! [`GpuOptions::allow_timestamps`]: super::GpuOptions::allow_timestamps

use std::collections::BTreeMap;

use crate::error::{Error, Result};

use super::pipeline::PipelineKey;
use super::GpuContext;

/// WebGPU's largest query set: at most this many dispatches of one submission are timed (the rest are counted
/// in [`Profile::untimed_dispatches`]).
pub(crate) const MAX_QUERIES: u32 = 4096;

/// GPU time of one kernel (shader entry point and its defines) over a profile.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: u64,
    pub gpu_ms: f64,
}

/// What [`GpuContext::stop_profiling`] returns.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Profile {
    /// Kernels by GPU time, largest first.
    pub kernels: Vec<KernelTime>,
    pub submissions: u64,
    /// Sum of every timed dispatch.
    pub gpu_ms: f64,
    /// Dispatches beyond [`MAX_QUERIES`] / 2 in one submission.
    pub untimed_dispatches: u64,
}

#[derive(Default)]
pub(crate) struct Profiler {
    active: bool,
    by_kernel: BTreeMap<String, (u64, f64)>,
    submissions: u64,
    untimed: u64,
    /// Submissions whose timestamps are still to be read (browser: mapping is asynchronous).
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pending: Vec<PendingProfile>,
}

/// The timestamps of one submission, to be read after it.
pub(crate) struct PendingProfile {
    labels: Vec<String>,
    staging: wgpu::Buffer,
    untimed: u64,
}

/// The name a dispatch is profiled under: `shader:entry` and its defines.
pub(crate) fn kernel_label(key: &PipelineKey) -> String {
    let mut s = format!("{}:{}", key.shader.trim_end_matches(".wgsl"), key.entry);
    for (k, v) in &key.defines {
        s.push_str(&if v.is_empty() { format!(" {k}") } else { format!(" {k}={v}") });
    }
    for (k, v) in &key.constants {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

impl GpuContext {
    /// Starts collecting GPU time per kernel; [`stop_profiling`](Self::stop_profiling) returns it.
    pub fn start_profiling(&self) -> Result<()> {
        if !self.caps.timestamps {
            return Err(Error::MissingFeature {
                feature: "timestamp-query",
                what: format!(
                    "profiling on {} (open the context with GpuOptions::allow_timestamps; the adapter must offer it)",
                    self.caps.adapter_name
                ),
            });
        }
        let mut p = self.profiler.lock().unwrap_or_else(|p| p.into_inner());
        *p = Profiler { active: true, ..Profiler::default() };
        Ok(())
    }

    /// Whether dispatches are being timed.
    pub fn profiling(&self) -> bool {
        self.profiler.lock().unwrap_or_else(|p| p.into_inner()).active
    }

    /// Reads the timestamps of every profiled submission still pending, then stops profiling and returns what
    /// was collected (the browser's way; natively each submission was read already).
    pub async fn finish_profiling(&self) -> Result<Profile> {
        #[cfg(target_arch = "wasm32")]
        {
            let pending = std::mem::take(&mut self.profiler.lock().unwrap_or_else(|p| p.into_inner()).pending);
            for p in pending {
                let (tx, rx) = futures_channel::oneshot::channel();
                p.staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send(r);
                });
                rx.await
                    .map_err(|_| Error::Readback("profile mapping callback dropped".into()))?
                    .map_err(|e| Error::Readback(e.to_string()))?;
                self.profile_add(p)?;
            }
        }
        Ok(self.stop_profiling())
    }

    /// Stops profiling and returns what was collected (natively; in the browser use
    /// [`finish_profiling`](Self::finish_profiling), which first reads the pending submissions).
    pub fn stop_profiling(&self) -> Profile {
        let p = std::mem::take(&mut *self.profiler.lock().unwrap_or_else(|p| p.into_inner()));
        let mut kernels: Vec<KernelTime> = p
            .by_kernel
            .into_iter()
            .map(|(kernel, (dispatches, ns))| KernelTime { kernel, dispatches, gpu_ms: ns / 1e6 })
            .collect();
        kernels.sort_by(|a, b| b.gpu_ms.total_cmp(&a.gpu_ms));
        let gpu_ms = kernels.iter().map(|k| k.gpu_ms).sum();
        Profile { kernels, submissions: p.submissions, gpu_ms, untimed_dispatches: p.untimed }
    }

    /// A query set for `n` dispatches (two timestamps each).
    pub(crate) fn profile_queries(&self, n: usize) -> (wgpu::QuerySet, u32) {
        let count = (n as u32 * 2).clamp(2, MAX_QUERIES);
        let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        (qs, count)
    }

    /// Records the resolve of `qs` (its first `count` queries) into a readable buffer.
    pub(crate) fn profile_resolve(
        &self,
        enc: &mut wgpu::CommandEncoder,
        qs: &wgpu::QuerySet,
        count: u32,
        labels: Vec<String>,
        untimed: u64,
    ) -> PendingProfile {
        let bytes = count as u64 * 8;
        let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        enc.resolve_query_set(qs, 0..count, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &staging, 0, bytes);
        PendingProfile { labels, staging, untimed }
    }

    /// Waits for a profiled submission and adds its timestamps to the profile.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn profile_collect(&self, pending: PendingProfile) -> Result<()> {
        let slice = pending.staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Readback(e.to_string()))?;
        rx.recv()
            .map_err(|_| Error::Readback("profile mapping callback dropped".into()))?
            .map_err(|e| Error::Readback(e.to_string()))?;
        self.profile_add(pending)
    }

    /// Adds the timestamps of a mapped profile readback to the profile.
    fn profile_add(&self, pending: PendingProfile) -> Result<()> {
        let slice = pending.staging.slice(..);
        let ticks: Vec<u64> =
            bytemuck::pod_collect_to_vec(&slice.get_mapped_range().map_err(|e| Error::Readback(format!("{e:?}")))?[..]);
        pending.staging.unmap();
        pending.staging.destroy();
        let period = self.queue.get_timestamp_period() as f64;
        let mut p = self.profiler.lock().unwrap_or_else(|p| p.into_inner());
        p.submissions += 1;
        p.untimed += pending.untimed;
        for (i, label) in pending.labels.into_iter().enumerate() {
            let (begin, end) = (ticks[2 * i], ticks[2 * i + 1]);
            let e = p.by_kernel.entry(label).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += end.saturating_sub(begin) as f64 * period;
        }
        Ok(())
    }

    /// Queues a profiled submission's readback for [`finish_profiling`](Self::finish_profiling).
    #[cfg(target_arch = "wasm32")]
    pub(crate) fn profile_collect(&self, pending: PendingProfile) -> Result<()> {
        self.profiler.lock().unwrap_or_else(|p| p.into_inner()).pending.push(pending);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_shader_entry_and_defines() {
        let key = PipelineKey::new("gemv.wgsl", "gemv_q").define("Q4_0");
        assert_eq!(kernel_label(&key), "gemv:gemv_q Q4_0");
        assert_eq!(kernel_label(&PipelineKey::new("norm.wgsl", "rms_norm")), "norm:rms_norm");
    }
}
