//! Async readback that works on both targets: copy into a MAP_READ staging buffer, `map_async`, await a
//! oneshot. Natively we drive the device with `poll`; in the browser the event loop resolves the mapping.

use crate::error::{Error, Result};

use super::{DType, GpuContext, Tensor};

/// Readback buffers up to this size are kept for reuse, at most [`STAGING_PARK_COUNT`] of them.
const STAGING_PARK_MAX_BYTES: u64 = 64 * 1024;
const STAGING_PARK_COUNT: usize = 4;

/// A MAP_READ buffer that a submitted copy fills ([`GpuContext::read_staging`] reads it).
pub struct Staging {
    buf: Option<wgpu::Buffer>,
    /// The submission holding the copy, once submitted: natively, reading waits for that one only, not for work
    /// submitted after it (a pipelined decode's next step).
    submission: Option<wgpu::SubmissionIndex>,
    /// The mapping, once asked for ([`Staging::begin_map`]).
    mapping: Option<futures_channel::oneshot::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>>,
}

impl Staging {
    fn new(buf: Option<wgpu::Buffer>) -> Self {
        Self { buf, submission: None, mapping: None }
    }

    /// Notes the submission that holds the copy and asks for the mapping at once: a mapping asked for later could
    /// be held up by work submitted in between (an implementation may wait for everything submitted before the
    /// request, not only for the work that uses the buffer), which would cost a pipelined decode its overlap.
    pub(crate) fn submitted(mut self, idx: wgpu::SubmissionIndex) -> Self {
        self.submission = Some(idx);
        self.begin_map();
        self
    }

    fn begin_map(&mut self) {
        if let (Some(buf), None) = (&self.buf, &self.mapping) {
            let (tx, rx) = futures_channel::oneshot::channel();
            buf.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            self.mapping = Some(rx);
        }
    }
}

impl GpuContext {
    /// Records a copy of `bytes` bytes of `t` from byte `offset` into a MAP_READ buffer: a parked one of that size
    /// (a decoded token's 4 bytes reuse one buffer) or a new one.
    pub(crate) fn copy_to_staging(
        &self,
        enc: &mut wgpu::CommandEncoder,
        t: &Tensor,
        offset: u64,
        bytes: u64,
    ) -> Result<Staging> {
        if offset + bytes > t.buf.size() || bytes % 4 != 0 || offset % 4 != 0 {
            return Err(Error::Shape {
                op: "readback",
                detail: format!("{bytes} bytes at {offset} of {}", t.buf.size()),
            });
        }
        if bytes == 0 {
            return Ok(Staging::new(None));
        }
        let parked = {
            let mut pool = self.staging_buffers.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter().position(|b| b.size() == bytes).map(|i| pool.swap_remove(i))
        };
        let staging = parked.unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        enc.copy_buffer_to_buffer(t.buf.raw(), offset, &staging, 0, bytes);
        Ok(Staging::new(Some(staging)))
    }

    /// Reads `bytes` bytes of `t` starting at byte `offset` (one submission: the copy).
    pub async fn read_bytes(&self, t: &Tensor, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        let mut enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
        let staging = self.copy_to_staging(&mut enc, t, offset, bytes)?;
        if staging.buf.is_none() {
            return Ok(Vec::new());
        }
        let staging = staging.submitted(self.queue.submit([enc.finish()]));
        self.submitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.read_staging(staging).await
    }

    /// Waits for the copy into `staging` (submitted before) and returns its bytes.
    pub async fn read_staging(&self, mut staging: Staging) -> Result<Vec<u8>> {
        staging.begin_map();
        let Staging { buf, submission, mapping } = staging;
        let (Some(staging), Some(rx)) = (buf, mapping) else { return Ok(Vec::new()) };
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait { submission_index: submission, timeout: None })
            .map_err(|e| self.lost_or(Error::Readback(e.to_string())))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission; // the event loop resolves the mapping
        let mapped = rx.await.map_err(|_| self.lost_or(Error::Readback("mapping callback dropped".into())))?;
        mapped.map_err(|e| self.lost_or(Error::Readback(e.to_string())))?;
        self.take_error()?;
        let data = staging.slice(..).get_mapped_range().map_err(|e| Error::Readback(format!("{e:?}")))?.to_vec();
        staging.unmap();
        // small buffers are parked for the next readback of that size; large ones are freed at once
        let mut pool = self.staging_buffers.lock().unwrap_or_else(|p| p.into_inner());
        if staging.size() <= STAGING_PARK_MAX_BYTES && pool.len() < STAGING_PARK_COUNT {
            pool.push(staging);
        } else {
            staging.destroy();
        }
        Ok(data)
    }

    /// Reads an f32 (or f16 / bf16, converted) tensor.
    pub async fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let n = t.numel();
        match t.dtype {
            DType::F32 => {
                let b = self.read_bytes(t, 0, n as u64 * 4).await?;
                Ok(bytemuck::pod_collect_to_vec(&b))
            }
            DType::F16 => {
                let b = self.read_bytes(t, 0, t.bytes()).await?;
                let h: Vec<u16> = bytemuck::pod_collect_to_vec(&b);
                Ok(h[..n].iter().map(|&x| half::f16::from_bits(x).to_f32()).collect())
            }
            DType::BF16 => {
                let b = self.read_bytes(t, 0, t.bytes()).await?;
                let h: Vec<u16> = bytemuck::pod_collect_to_vec(&b);
                Ok(h[..n].iter().map(|&x| half::bf16::from_bits(x).to_f32()).collect())
            }
            d => Err(Error::UnsupportedDtype { op: "read_f32", dtype: d.to_string() }),
        }
    }

    pub async fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        if t.dtype != DType::U32 {
            return Err(Error::UnsupportedDtype { op: "read_u32", dtype: t.dtype.to_string() });
        }
        let b = self.read_bytes(t, 0, t.numel() as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec(&b))
    }
}
