//! Recording many dispatches into one queue submission.
//!
//! Ops call [`Recorder::dispatch`] with a pipeline key, a small uniform parameter block and their storage
//! bindings. Nothing touches the GPU until [`Recorder::submit`]: then all parameter blocks are written into one
//! uniform buffer (at offsets aligned to `minUniformBufferOffsetAlignment`), every bind group is created, and all
//! dispatches are encoded into one compute pass and submitted once. A decode step is therefore one submission.
//! The recorder keeps every bound buffer alive until the submission is queued.
//!
//! Activations are recycled within a submission too: once the only handle left to a pooled buffer is the
//! recorder's own (the op that read it has been recorded and the caller dropped its tensor), no later dispatch
//! can name it, so [`Recorder::empty`] hands it out again for a later op's output. WebGPU orders the dispatches
//! of a submission (a write after an earlier read of the same buffer is synchronized like any other
//! dependency), so this is safe; without it a forward pass would hold every layer's activations at once
//! (1.9 × weights + KV cache for a 64-token SmolLM2 prefill). Buffers recycled this way never reach the
//! context's pool before the submission, so a `queue.write_buffer` (which lands before the whole submission)
//! can never target one of them.
//!
//! Binding convention for every kernel: `@group(0) @binding(0)` is the `var<uniform>` parameter block (when the
//! op has parameters), and storage buffers follow at bindings 1, 2, ... in the order given.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::error::{Error, Result};

use super::buffer::{size_class, take_best_fit, GpuBuffer};
use super::pipeline::PipelineKey;
use super::DType;
use super::{GpuContext, Tensor};

/// One storage binding: a whole buffer or a byte range of it.
#[derive(Clone)]
pub struct Binding {
    pub buf: Arc<GpuBuffer>,
    pub offset: u64,
    pub size: Option<u64>,
}

impl From<&Tensor> for Binding {
    fn from(t: &Tensor) -> Self {
        Binding { buf: t.buf.clone(), offset: 0, size: None }
    }
}

struct Dispatch {
    label: &'static str,
    /// `shader:entry defines`, only while the context is profiling.
    profile_label: Option<String>,
    pipeline: Arc<wgpu::ComputePipeline>,
    uniform: Option<(u64, u64)>,
    /// (buffer, offset, size): raw handles, so that a recycled [`GpuBuffer`] wrapper may move on
    bindings: Vec<(wgpu::Buffer, u64, Option<u64>)>,
    workgroups: [u32; 3],
}

enum Command {
    Dispatch(Dispatch),
    Copy { src: wgpu::Buffer, src_offset: u64, dst: wgpu::Buffer, dst_offset: u64, size: u64 },
}

/// Records dispatches; submits them all at once.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    commands: Vec<Command>,
    uniforms: Vec<u8>,
    /// Pooled buffers the recorded commands use (what keeps them from the pool until the submission)...
    held: Vec<Arc<GpuBuffer>>,
    /// ... and the weights and other exact buffers they use.
    held_exact: Vec<Arc<GpuBuffer>>,
    held_ptrs: HashSet<*const GpuBuffer>,
    /// Pooled buffers no handle outside the recorder names any more, by size class: outputs of later ops.
    recycled: BTreeMap<u64, Vec<GpuBuffer>>,
    reissued: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Self {
            ctx,
            commands: Vec::new(),
            uniforms: Vec::new(),
            held: Vec::new(),
            held_exact: Vec::new(),
            held_ptrs: HashSet::new(),
            recycled: BTreeMap::new(),
            reissued: 0,
        }
    }

    /// An uninitialized activation for an op's output: a buffer this submission no longer needs when there is
    /// one that fits (best fit, as in the pool: see [`take_best_fit`]), else one from the context's pool (see the module docs).
    pub fn empty(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        if dtype.is_quantized() {
            return Err(Error::UnsupportedDtype { op: "empty", dtype: dtype.to_string() });
        }
        let bytes = dtype.storage_bytes(shape.iter().product());
        self.collect_unused();
        match take_best_fit(&mut self.recycled, size_class(bytes)) {
            Some((_, b)) => {
                self.reissued += 1;
                // held at once: if the caller drops it unbound (an empty result, an op that failed), it comes
                // back here, never to the context's pool while earlier commands of this recording still use it
                let buf = Arc::new(b.reissue(bytes));
                self.hold(&buf);
                Ok(Tensor { buf, shape: shape.to_vec(), dtype, scales_offset: 0 })
            }
            None => self.ctx.empty(shape, dtype),
        }
    }

    /// Outputs served from buffers recycled within this recording.
    pub fn reissued(&self) -> usize {
        self.reissued
    }

    fn hold(&mut self, b: &Arc<GpuBuffer>) {
        if self.held_ptrs.insert(Arc::as_ptr(b)) {
            if b.pooled() {
                self.held.push(b.clone());
            } else {
                self.held_exact.push(b.clone());
            }
        }
    }

    /// Moves the pooled buffers that only the recorder still names to `recycled`.
    fn collect_unused(&mut self) {
        let mut i = 0;
        while i < self.held.len() {
            if Arc::strong_count(&self.held[i]) == 1 {
                let a = self.held.swap_remove(i);
                self.held_ptrs.remove(&Arc::as_ptr(&a));
                if let Ok(b) = Arc::try_unwrap(a) {
                    self.recycled.entry(b.alloc_bytes()).or_default().push(b);
                }
            } else {
                i += 1;
            }
        }
    }

    pub fn ctx(&self) -> &'a GpuContext {
        self.ctx
    }

    /// Dispatches recorded so far (for the per-token dispatch count in benchmarks).
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Records one dispatch. `params` is the uniform block (`bytemuck` bytes of a `#[repr(C)]` struct whose size
    /// is a multiple of 16), or empty when the kernel has none.
    pub fn dispatch(
        &mut self,
        key: &PipelineKey,
        params: &[u8],
        bindings: &[Binding],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let max = self.ctx.caps.max_workgroups_per_dim;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::LimitExceeded {
                what: format!("dispatch of {}", key.entry),
                limit: "maxComputeWorkgroupsPerDimension",
                needed: *workgroups.iter().max().unwrap() as u64,
                offered: max as u64,
            });
        }
        for b in bindings {
            let size = b.size.unwrap_or(b.buf.size() - b.offset.min(b.buf.size()));
            self.ctx.check_binding(&format!("binding of {}", key.entry), size)?;
        }
        let pipeline = self.ctx.pipeline(key)?;
        let uniform = if params.is_empty() {
            None
        } else {
            let align = self.ctx.caps.min_uniform_align.max(16) as usize;
            let off = self.uniforms.len().div_ceil(align) * align;
            self.uniforms.resize(off, 0);
            self.uniforms.extend_from_slice(params);
            // uniform blocks must be a multiple of 16 bytes
            let padded = params.len().div_ceil(16) * 16;
            self.uniforms.resize(off + padded, 0);
            Some((off as u64, padded as u64))
        };
        if workgroups.iter().any(|&w| w == 0) {
            return Ok(()); // nothing to do (empty tensor)
        }
        for b in bindings {
            self.hold(&b.buf);
        }
        self.commands.push(Command::Dispatch(Dispatch {
            label: key.entry,
            profile_label: self.ctx.profiling().then(|| super::profile::kernel_label(key)),
            pipeline,
            uniform,
            bindings: bindings.iter().map(|b| (b.buf.raw().clone(), b.offset, b.size)).collect(),
            workgroups,
        }));
        Ok(())
    }

    /// Records a buffer-to-buffer copy (byte offsets and size multiples of 4).
    pub fn copy(&mut self, src: &Tensor, src_offset: u64, dst: &Tensor, dst_offset: u64, size: u64) -> Result<()> {
        if src_offset + size > src.buf.size() || dst_offset + size > dst.buf.size() || size % 4 != 0 {
            return Err(Error::Shape {
                op: "copy",
                detail: format!(
                    "copy of {size} bytes from {src_offset} (of {}) to {dst_offset} (of {})",
                    src.buf.size(),
                    dst.buf.size()
                ),
            });
        }
        self.hold(&src.buf);
        self.hold(&dst.buf);
        self.commands.push(Command::Copy {
            src: src.buf.raw().clone(),
            src_offset,
            dst: dst.buf.raw().clone(),
            dst_offset,
            size,
        });
        Ok(())
    }

    /// Encodes everything recorded into one command buffer and submits it.
    pub fn submit(self) -> Result<wgpu::SubmissionIndex> {
        self.submit_inner(None).map(|(idx, _)| idx)
    }

    /// Submits the recorded work and, in the same command buffer, a copy of `bytes` bytes of `t` into a fresh
    /// MAP_READ buffer: one queue submission for a step and its readback (a decoded token's id). Read the result
    /// with [`GpuContext::read_staging`].
    pub fn submit_reading(self, t: &Tensor, bytes: u64) -> Result<super::Staging> {
        let (_, staging) = self.submit_inner(Some((t, bytes)))?;
        staging.ok_or_else(|| Error::Readback("no staging buffer".into()))
    }

    fn submit_inner(self, readback: Option<(&Tensor, u64)>) -> Result<(wgpu::SubmissionIndex, Option<super::Staging>)> {
        let ctx = self.ctx;
        let device = &ctx.device;
        let uniform_buf = if self.uniforms.is_empty() {
            None
        } else {
            let b = ctx.take_uniform_buffer(self.uniforms.len() as u64);
            ctx.queue.write_buffer(&b, 0, &self.uniforms);
            Some(b)
        };
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("webvlm") });
        let mut i = 0;
        let cmds = &self.commands;
        let dispatches = cmds.iter().filter(|c| matches!(c, Command::Dispatch(_))).count();
        let profile = (dispatches > 0 && ctx.profiling()).then(|| ctx.profile_queries(dispatches));
        let (mut labels, mut untimed) = (Vec::new(), 0u64);
        while i < cmds.len() {
            match &cmds[i] {
                Command::Copy { src, src_offset, dst, dst_offset, size } => {
                    encoder.copy_buffer_to_buffer(src, *src_offset, dst, *dst_offset, *size);
                    i += 1;
                }
                Command::Dispatch(_) => {
                    // profiling: one pass per dispatch, its beginning and end timestamped
                    let timed = match &profile {
                        Some((qs, count)) if (labels.len() as u32) * 2 < *count => {
                            Some(wgpu::ComputePassTimestampWrites {
                                query_set: qs,
                                beginning_of_pass_write_index: Some(labels.len() as u32 * 2),
                                end_of_pass_write_index: Some(labels.len() as u32 * 2 + 1),
                            })
                        }
                        Some(_) => {
                            untimed += 1;
                            None
                        }
                        None => None,
                    };
                    let one_dispatch = profile.is_some();
                    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: timed.clone(),
                    });
                    if timed.is_some() {
                        if let Command::Dispatch(d) = &cmds[i] {
                            labels.push(d.profile_label.clone().unwrap_or_else(|| d.label.to_string()));
                        }
                    }
                    while let Some(Command::Dispatch(d)) = cmds.get(i) {
                        let layout = d.pipeline.get_bind_group_layout(0);
                        let mut entries = Vec::with_capacity(d.bindings.len() + 1);
                        if let (Some((off, size)), Some(ub)) = (d.uniform, &uniform_buf) {
                            entries.push(wgpu::BindGroupEntry {
                                binding: 0,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: ub,
                                    offset: off,
                                    size: wgpu::BufferSize::new(size),
                                }),
                            });
                        }
                        for (j, (buffer, offset, size)) in d.bindings.iter().enumerate() {
                            entries.push(wgpu::BindGroupEntry {
                                binding: j as u32 + 1,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer,
                                    offset: *offset,
                                    size: size.and_then(wgpu::BufferSize::new),
                                }),
                            });
                        }
                        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some(d.label),
                            layout: &layout,
                            entries: &entries,
                        });
                        pass.set_pipeline(&d.pipeline);
                        pass.set_bind_group(0, &bg, &[]);
                        pass.dispatch_workgroups(d.workgroups[0], d.workgroups[1], d.workgroups[2]);
                        i += 1;
                        if one_dispatch {
                            break;
                        }
                    }
                }
            }
        }
        let staging = match readback {
            Some((t, bytes)) => Some(ctx.copy_to_staging(&mut encoder, t, 0, bytes)?),
            None => None,
        };
        let pending = profile.map(|(qs, _)| {
            let count = labels.len() as u32 * 2;
            ctx.profile_resolve(&mut encoder, &qs, count, std::mem::take(&mut labels), untimed)
        });
        let idx = ctx.queue.submit([encoder.finish()]);
        let staging = staging.map(|s| s.submitted(idx.clone()));
        ctx.submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = uniform_buf {
            // the next submission's parameter write is queued after this one: the buffer can be reused at once
            ctx.return_uniform_buffer(b);
        }
        ctx.take_error()?;
        if let Some(p) = pending {
            ctx.profile_collect(p)?;
        }
        Ok((idx, staging))
    }
}
