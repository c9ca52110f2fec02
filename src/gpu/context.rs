//! Adapter and device creation. We request the adapter's real limits (storage binding size, buffer size,
//! workgroup sizes) rather than WebGPU's defaults, and the optional features we can use (shader-f16,
//! subgroups, timestamp queries) only where they exist, so the f32 / no-subgroup path always works.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

use super::buffer::BufferPool;
use super::pipeline::PipelineCache;

/// What the caller wants from the device. Optional features are used only when the adapter offers them.
#[derive(Clone, Debug)]
pub struct GpuOptions {
    pub allow_f16: bool,
    pub allow_subgroups: bool,
    pub allow_timestamps: bool,
    pub power_preference: wgpu::PowerPreference,
    /// The adapter is SwiftShader, a CPU emulation (see [`Caps::cpu_adapter`]). wgpu does not name web adapters,
    /// so the browser bindings detect it from `GPUAdapterInfo`; natively the adapter's name tells.
    pub swiftshader: bool,
}

impl Default for GpuOptions {
    fn default() -> Self {
        Self {
            allow_f16: true,
            allow_subgroups: true,
            allow_timestamps: cfg!(feature = "profiling"),
            power_preference: wgpu::PowerPreference::HighPerformance,
            swiftshader: false,
        }
    }
}

/// The capabilities of the opened device, as the kernels see them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Caps {
    pub adapter_name: String,
    pub backend: String,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// The subgroup size, where subgroups exist and the adapter has only one (SwiftShader: 4, lavapipe: 8).
    pub subgroup_size: Option<u32>,
    pub timestamps: bool,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub max_workgroup_invocations: u32,
    pub max_workgroup_size_x: u32,
    pub max_workgroups_per_dim: u32,
    pub max_workgroup_storage: u32,
    pub max_storage_buffers_per_stage: u32,
    pub min_uniform_align: u32,
    /// Alignment of a storage binding's byte offset (a view of rows inside a buffer, see `matmul::Rows`).
    pub min_storage_align: u32,
    /// A CPU emulation of a GPU (lavapipe / llvmpipe, SwiftShader): invocations run as SIMD lanes of CPU threads,
    /// per-lane loads are gathers and workgroup barriers are expensive, so `linear` takes the barrier-free GEMM
    /// there (`matmul_direct.wgsl`: 2–2.7 × the tiled one on lavapipe, time to first token 5.7 → 3.4 s on
    /// SwiftShader; docs/benchmarks.md).
    pub cpu_adapter: bool,
}

/// One GPU device with its caches. Cheap to share (`Arc`).
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub caps: Caps,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: BufferPool,
    /// The first uncaptured GPU error since it was last taken; turned into `Error::GpuValidation`.
    pub(crate) uncaptured: Arc<Mutex<Option<String>>>,
    pub(crate) lost: Arc<Mutex<Option<String>>>,
    /// Queue submissions made through this context (see [`submissions`](Self::submissions)).
    pub(crate) submitted: std::sync::atomic::AtomicU64,
    /// GPU time per kernel while profiling (see [`start_profiling`](Self::start_profiling)).
    pub(crate) profiler: Mutex<super::profile::Profiler>,
    /// Parameter (uniform) buffers of finished recordings, by size (powers of two), for the next ones: a decode
    /// step's parameters (~100 KB at 256-byte alignment) would otherwise be a new buffer per token.
    uniform_buffers: Mutex<Vec<wgpu::Buffer>>,
    /// Small unmapped MAP_READ buffers of finished readbacks (the decoded token id's 4 bytes each step).
    pub(crate) staging_buffers: Mutex<Vec<wgpu::Buffer>>,
}

impl GpuContext {
    /// How many command buffers webvlm has submitted to the queue so far (a decode step should cost one).
    pub fn submissions(&self) -> u64 {
        self.submitted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Opens the best adapter. Fails with [`Error::NoAdapter`] when there is none (no silent CPU fallback).
    pub async fn new(opts: GpuOptions) -> Result<Arc<Self>> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends =
            if cfg!(target_arch = "wasm32") { wgpu::Backends::BROWSER_WEBGPU } else { wgpu::Backends::PRIMARY };
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: opts.power_preference,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| {
                Error::NoAdapter(format!(
                    "{e}. Natively install a Vulkan driver (e.g. Mesa's lavapipe: mesa-vulkan-drivers); in a \
                     browser enable WebGPU"
                ))
            })?;
        Self::from_adapter(adapter, opts).await
    }

    /// Opens a device on a given adapter.
    pub async fn from_adapter(adapter: wgpu::Adapter, opts: GpuOptions) -> Result<Arc<Self>> {
        let info = adapter.get_info();
        let offered = adapter.features();
        let limits = adapter.limits();

        let mut features = wgpu::Features::empty();
        let f16 = opts.allow_f16 && offered.contains(wgpu::Features::SHADER_F16);
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        // wgpu's WebGPU backend neither reports nor requests "subgroups" (its feature table lacks it); there
        // `web::request_subgroups` adds it to the device request where the browser's adapter offers it.
        let subgroups = opts.allow_subgroups && offered.contains(wgpu::Features::SUBGROUP);
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let timestamps = opts.allow_timestamps && offered.contains(wgpu::Features::TIMESTAMP_QUERY);
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }

        // Ask for everything the adapter offers: the defaults (128 MiB binding, 256 MiB buffer) are far below what
        // real hardware supports and would cap the model size for no reason.
        #[cfg(target_arch = "wasm32")]
        let patch = opts.allow_subgroups.then(web::request_subgroups);
        // wgpu calls the browser's requestDevice synchronously here, while the patch is in place
        let request = adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("webvlm"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        });
        #[cfg(target_arch = "wasm32")]
        let subgroups = patch.map_or(subgroups, |p| web::restore(&p));
        let (device, queue) = request.await.map_err(|e| Error::DeviceRequest(e.to_string()))?;

        let uncaptured = Arc::new(Mutex::new(None::<String>));
        {
            let slot = uncaptured.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                log::error!("uncaptured GPU error: {e}");
                let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
                if s.is_none() {
                    *s = Some(e.to_string());
                }
            }));
        }
        let lost = Arc::new(Mutex::new(None::<String>));
        {
            let slot = lost.clone();
            device.set_device_lost_callback(move |reason, msg| {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(format!("{reason:?}: {msg}"));
                }
            });
        }

        let caps = Caps {
            cpu_adapter: opts.swiftshader
                || ["llvmpipe", "lavapipe", "swiftshader"].iter().any(|s| info.name.to_lowercase().contains(s)),
            adapter_name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            shader_f16: f16,
            subgroups,
            // kernels that share data by subgroup broadcasts need the lane count at pipeline creation
            subgroup_size: (subgroups && info.subgroup_min_size == info.subgroup_max_size)
                .then_some(info.subgroup_min_size),
            timestamps,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_size_x: limits.max_compute_workgroup_size_x,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            min_uniform_align: limits.min_uniform_buffer_offset_alignment,
            min_storage_align: limits.min_storage_buffer_offset_alignment,
        };
        log::info!(
            "webvlm GPU: {} ({}) f16={} subgroups={} (size {:?})",
            caps.adapter_name,
            caps.backend,
            f16,
            subgroups,
            caps.subgroup_size
        );
        Ok(Arc::new(Self {
            device,
            queue,
            caps,
            pipelines: PipelineCache::default(),
            pool: BufferPool::default(),
            uncaptured,
            lost,
            submitted: std::sync::atomic::AtomicU64::new(0),
            profiler: Mutex::default(),
            uniform_buffers: Mutex::default(),
            staging_buffers: Mutex::default(),
        }))
    }

    /// Native convenience: blocks on [`GpuContext::new`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_blocking(opts: GpuOptions) -> Result<Arc<Self>> {
        pollster::block_on(Self::new(opts))
    }

    /// Returns (and clears) a GPU error that happened outside any call that could report it. A lost device is
    /// reported as such even when what surfaced first is the validation error of a call on it.
    pub fn take_error(&self) -> Result<()> {
        let uncaptured = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take();
        match uncaptured {
            Some(msg) => Err(self.lost_or(Error::GpuValidation(msg))),
            None => match self.lost_message() {
                Some(msg) => Err(Error::DeviceLost(msg)),
                None => Ok(()),
            },
        }
    }

    /// `e`, or `Error::DeviceLost` when the device is lost: for failures (invalid objects, a failed mapping) that
    /// a lost device causes before its notice arrives. Natively the notice of a destroyed device is delivered by
    /// a poll, so this polls once (without waiting) first; on the web it comes from the event loop.
    pub fn lost_or(&self, e: Error) -> Error {
        #[cfg(not(target_arch = "wasm32"))]
        let _ = self.device.poll(wgpu::PollType::Poll);
        match self.lost_message() {
            Some(msg) => Error::DeviceLost(msg),
            None => e,
        }
    }

    fn lost_message(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Checks that a buffer of `bytes` may be bound as one storage binding on this device.
    pub fn check_binding(&self, what: &str, bytes: u64) -> Result<()> {
        if bytes > self.caps.max_storage_binding {
            return Err(Error::LimitExceeded {
                what: what.to_string(),
                limit: "maxStorageBufferBindingSize",
                needed: bytes,
                offered: self.caps.max_storage_binding,
            });
        }
        if bytes > self.caps.max_buffer_size {
            return Err(Error::LimitExceeded {
                what: what.to_string(),
                limit: "maxBufferSize",
                needed: bytes,
                offered: self.caps.max_buffer_size,
            });
        }
        Ok(())
    }

    /// Statistics of the buffer pool (bytes live and cached).
    pub fn pool_stats(&self) -> super::PoolStats {
        self.pool.stats()
    }

    /// Frees the activation buffers parked in the pool (after loading, or under memory pressure).
    pub fn trim_pool(&self) {
        self.pool.trim();
        for b in self.uniform_buffers.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            b.destroy();
        }
    }

    /// A uniform buffer of at least `bytes` (a power of two ≥ 4 KiB): a parked one, or a new one.
    pub(crate) fn take_uniform_buffer(&self, bytes: u64) -> wgpu::Buffer {
        let size = bytes.next_power_of_two().max(4096);
        let mut parked = self.uniform_buffers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = parked.iter().position(|b| b.size() == size) {
            return parked.swap_remove(i);
        }
        drop(parked);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Parks a uniform buffer for the next recording (at most a few; the rest are destroyed).
    pub(crate) fn return_uniform_buffer(&self, b: wgpu::Buffer) {
        let mut parked = self.uniform_buffers.lock().unwrap_or_else(|p| p.into_inner());
        if parked.len() < 8 {
            parked.push(b);
        } else {
            b.destroy();
        }
    }

    /// Number of compiled pipelines in the cache.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.len()
    }
}

/// The browser's "subgroups" feature, which wgpu's WebGPU backend cannot request: for the one synchronous
/// `requestDevice` call wgpu makes, `GPUAdapter.prototype.requestDevice` adds it to the descriptor where the
/// adapter offers it; [`restore`](web::restore) puts the original back and says whether it was added.
#[cfg(target_arch = "wasm32")]
mod web {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(inline_js = r#"
export function requestSubgroups() {
  const proto = globalThis.GPUAdapter && globalThis.GPUAdapter.prototype;
  if (!proto || typeof proto.requestDevice !== 'function') return null;
  const original = proto.requestDevice;
  const state = { original, added: false };
  proto.requestDevice = function (desc) {
    if (this.features && this.features.has('subgroups')) {
      const features = Array.from((desc && desc.requiredFeatures) || []);
      if (!features.includes('subgroups')) features.push('subgroups');
      desc = Object.assign({}, desc, { requiredFeatures: features });
      state.added = true;
    }
    return original.call(this, desc);
  };
  return state;
}
export function restoreRequestDevice(state) {
  if (!state) return false;
  globalThis.GPUAdapter.prototype.requestDevice = state.original;
  return state.added;
}
"#)]
    extern "C" {
        #[wasm_bindgen(js_name = requestSubgroups)]
        pub fn request_subgroups() -> JsValue;
        #[wasm_bindgen(js_name = restoreRequestDevice)]
        pub fn restore(state: &JsValue) -> bool;
    }
}
