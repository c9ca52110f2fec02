//! Recording many dispatches into one queue submission.
//!
//! Ops call [`Recorder::dispatch`] with a pipeline key, a small uniform parameter block and their storage
//! bindings. Nothing touches the GPU until [`Recorder::submit`]: then all parameter blocks are written into one
//! uniform buffer (at offsets aligned to `minUniformBufferOffsetAlignment`), every bind group is created, and all
//! dispatches are encoded into one compute pass and submitted once. A decode step is therefore one submission.
//! The recorder keeps every bound buffer alive until the submission is queued.
//!
//! Binding convention for every kernel: `@group(0) @binding(0)` is the `var<uniform>` parameter block (when the
//! op has parameters), and storage buffers follow at bindings 1, 2, ... in the order given.

use std::sync::Arc;

use crate::error::{Error, Result};

use super::buffer::GpuBuffer;
use super::pipeline::PipelineKey;
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
    pipeline: Arc<wgpu::ComputePipeline>,
    uniform: Option<(u64, u64)>,
    bindings: Vec<Binding>,
    workgroups: [u32; 3],
}

enum Command {
    Dispatch(Dispatch),
    Copy { src: Arc<GpuBuffer>, src_offset: u64, dst: Arc<GpuBuffer>, dst_offset: u64, size: u64 },
}

/// Records dispatches; submits them all at once.
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    commands: Vec<Command>,
    uniforms: Vec<u8>,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a GpuContext) -> Self {
        Self { ctx, commands: Vec::new(), uniforms: Vec::new() }
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
        self.commands.push(Command::Dispatch(Dispatch {
            label: key.entry,
            pipeline,
            uniform,
            bindings: bindings.to_vec(),
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
        self.commands.push(Command::Copy { src: src.buf.clone(), src_offset, dst: dst.buf.clone(), dst_offset, size });
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
            let b = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: self.uniforms.len() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            ctx.queue.write_buffer(&b, 0, &self.uniforms);
            Some(b)
        };
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("webvlm") });
        let mut i = 0;
        let cmds = &self.commands;
        while i < cmds.len() {
            match &cmds[i] {
                Command::Copy { src, src_offset, dst, dst_offset, size } => {
                    encoder.copy_buffer_to_buffer(src.raw(), *src_offset, dst.raw(), *dst_offset, *size);
                    i += 1;
                }
                Command::Dispatch(_) => {
                    let mut pass = encoder
                        .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
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
                        for (j, b) in d.bindings.iter().enumerate() {
                            entries.push(wgpu::BindGroupEntry {
                                binding: j as u32 + 1,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: b.buf.raw(),
                                    offset: b.offset,
                                    size: b.size.and_then(wgpu::BufferSize::new),
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
                    }
                }
            }
        }
        let staging = match readback {
            Some((t, bytes)) => Some(ctx.copy_to_staging(&mut encoder, t, 0, bytes)?),
            None => None,
        };
        let idx = ctx.queue.submit([encoder.finish()]);
        ctx.submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.take_error()?;
        Ok((idx, staging))
    }
}
