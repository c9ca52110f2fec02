//! GPU buffers and their pool. Creating buffers is expensive in WebGPU (and on some drivers a
//! synchronization point), so activations are recycled: a dropped [`GpuBuffer`] goes back to the pool,
//! keyed by its size rounded up to 256 bytes, and a later request takes the smallest parked buffer that holds it
//! and is at most twice its size (best fit: a forward pass's activations come in a few sizes, and an exact match
//! would leave a free buffer of one size idle while a new one of a slightly smaller size is created beside it).
//! Weights are allocated exactly (`pooled = false`) and freed when dropped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Usage of every buffer the kernels see: bindable as storage, copyable both ways.
pub(crate) const STORAGE_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

const ALIGN: u64 = 256;

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PoolStats {
    /// Bytes held by live buffers (weights + activations in use).
    pub live_bytes: u64,
    /// Highest `live_bytes` seen.
    pub peak_live_bytes: u64,
    /// Bytes parked in the pool, ready for reuse.
    pub cached_bytes: u64,
    /// Bytes of GPU memory the pool's buffers occupy (live + cached): what the device holds for webvlm.
    pub held_bytes: u64,
    /// Highest `held_bytes` seen.
    pub peak_held_bytes: u64,
    /// Buffers created on the device so far.
    pub created: u64,
    /// Requests served from the pool.
    pub reused: u64,
    /// Parked buffers destroyed to make room for a request they could not serve (see `PoolInner::release_unfit`).
    pub released: u64,
}

#[derive(Default)]
pub(crate) struct PoolInner {
    free: BTreeMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

impl PoolInner {
    /// Before an activation of size class `class` is created: destroys parked buffers that could not serve it
    /// (smaller, or more than twice its size), largest first, until as many bytes as it needs are given back or
    /// none is left. A forward pass's phases (the image encoder's 1024-row activations, the decoder's prefill,
    /// its one-row decode steps) each want their own sizes; without this, every phase's buffers would stay
    /// parked beside the next phase's, and the memory held would be the sum of the phases' working sets instead
    /// of about the largest one. Within a phase nothing changes: its requests are served from its own parked
    /// buffers and no miss happens once its sizes have been seen.
    fn release_unfit(&mut self, class: u64) {
        let mut released = 0;
        while released < class {
            let Some(&alloc) = self.free.keys().rev().find(|&&a| !fits(a, class)) else {
                break;
            };
            let list = self.free.get_mut(&alloc).expect("key just found");
            let b = list.pop().expect("empty lists are removed");
            if list.is_empty() {
                self.free.remove(&alloc);
            }
            b.destroy();
            self.stats.held_bytes -= alloc;
            self.stats.cached_bytes -= alloc;
            self.stats.released += 1;
            released += alloc;
        }
    }
}

/// A pool of storage buffers by size class.
#[derive(Default)]
pub struct BufferPool {
    inner: Arc<Mutex<PoolInner>>,
}

/// The allocation size of a pooled request of `bytes`.
pub(crate) fn size_class(bytes: u64) -> u64 {
    bytes.max(4).div_ceil(ALIGN) * ALIGN
}

/// Whether a free buffer of `alloc` bytes may serve a request of size class `class`: at least its size and at most
/// twice it.
fn fits(alloc: u64, class: u64) -> bool {
    (class..=class.saturating_mul(2)).contains(&alloc)
}

/// Takes the best-fitting free buffer for a request of size class `class` from `free` (keyed by allocation size):
/// the smallest that [`fits`]. Returns its allocation size with it.
pub(crate) fn take_best_fit<T>(free: &mut BTreeMap<u64, Vec<T>>, class: u64) -> Option<(u64, T)> {
    let (&alloc, list) = free.range_mut(class..).next().filter(|(&a, _)| fits(a, class))?;
    let b = list.pop()?;
    if list.is_empty() {
        free.remove(&alloc);
    }
    Some((alloc, b))
}

impl BufferPool {
    pub(crate) fn acquire(&self, device: &wgpu::Device, size: u64, pooled: bool) -> GpuBuffer {
        let class = size_class(size);
        let mut alloc = if pooled { class } else { size.max(4).div_ceil(4) * 4 };
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let reused = if pooled { take_best_fit(&mut inner.free, class) } else { None };
        let buffer = match reused {
            Some((fit, b)) => {
                inner.stats.reused += 1;
                inner.stats.cached_bytes -= fit;
                alloc = fit;
                b
            }
            None => {
                if pooled {
                    inner.release_unfit(class);
                }
                inner.stats.created += 1;
                inner.stats.held_bytes += alloc;
                inner.stats.peak_held_bytes = inner.stats.peak_held_bytes.max(inner.stats.held_bytes);
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size: alloc,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        inner.stats.live_bytes += alloc;
        inner.stats.peak_live_bytes = inner.stats.peak_live_bytes.max(inner.stats.live_bytes);
        GpuBuffer {
            buffer: Some(buffer),
            size,
            alloc,
            pool: if pooled { Some(self.inner.clone()) } else { None },
            stats: self.inner.clone(),
        }
    }

    pub fn stats(&self) -> PoolStats {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).stats
    }

    /// Frees every cached buffer (e.g. after loading, or under memory pressure).
    pub fn trim(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let free: Vec<_> = std::mem::take(&mut inner.free).into_values().flatten().collect();
        for b in free {
            inner.stats.held_bytes -= b.size();
            b.destroy();
        }
        inner.stats.cached_bytes = 0;
    }
}

/// A storage buffer; returned to its pool (or destroyed) on drop.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    /// Bytes the user asked for.
    size: u64,
    /// Bytes actually allocated (size class).
    alloc: u64,
    pool: Option<Arc<Mutex<PoolInner>>>,
    stats: Arc<Mutex<PoolInner>>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
    /// Bytes requested (the allocation may be larger).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether it goes back to the pool when dropped (an activation), rather than being destroyed (a weight).
    pub(crate) fn pooled(&self) -> bool {
        self.pool.is_some()
    }

    /// Bytes allocated (the size class of a pooled buffer).
    pub fn alloc_bytes(&self) -> u64 {
        self.alloc
    }

    /// The same allocation, handed out again for a request of `size` bytes of the same size class.
    pub(crate) fn reissue(mut self, size: u64) -> GpuBuffer {
        debug_assert!(size <= self.alloc);
        GpuBuffer {
            buffer: self.buffer.take(),
            size,
            alloc: self.alloc,
            pool: self.pool.clone(),
            stats: self.stats.clone(),
        }
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        {
            let mut s = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            s.stats.live_bytes -= self.alloc;
            if self.pool.is_none() {
                s.stats.held_bytes -= self.alloc;
            }
        }
        match &self.pool {
            Some(pool) => {
                let mut inner = pool.lock().unwrap_or_else(|p| p.into_inner());
                inner.stats.cached_bytes += self.alloc;
                inner.free.entry(self.alloc).or_default().push(buffer);
            }
            None => buffer.destroy(),
        }
    }
}
