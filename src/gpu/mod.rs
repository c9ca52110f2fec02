//! The GPU runtime: one [`GpuContext`] per device with the adapter's real limits and optional features, a
//! [`BufferPool`], a [`PipelineCache`] keyed by (shader, entry point, defines, override constants), a
//! [`Recorder`] that puts many dispatches into one queue submission, and async readback for both targets.
//!
//! Everything above this layer (ops, nn, models) talks to the GPU only through these types.

#[cfg(not(target_arch = "wasm32"))]
pub mod bench;
mod buffer;
mod context;
mod pipeline;
mod profile;
mod readback;
mod recorder;
pub mod shader;
mod tensor;

pub use buffer::{BufferPool, GpuBuffer, PoolStats};
pub use context::{Caps, GpuContext, GpuOptions};
pub use pipeline::{PipelineCache, PipelineKey};
pub use profile::{KernelTime, Profile};
pub use readback::Staging;
pub use recorder::{Binding, Recorder};
pub use tensor::{DType, Tensor};

/// Workgroup grid for `n` workgroups, split over x and y so no dimension exceeds `max_per_dim`.
/// Kernels recover the linear workgroup index as `wid.x + wid.y * num_workgroups.x`.
pub fn grid_1d(n: u32, max_per_dim: u32) -> [u32; 3] {
    if n <= max_per_dim {
        [n.max(1), 1, 1]
    } else {
        let y = n.div_ceil(max_per_dim);
        let x = n.div_ceil(y);
        [x, y, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::grid_1d;

    #[test]
    fn grid_covers_all_workgroups() {
        for n in [0u32, 1, 7, 65535, 65536, 200_000, 10_000_000] {
            let [x, y, z] = grid_1d(n, 65535);
            assert!(x <= 65535 && y <= 65535 && z == 1, "n={n}: {x}x{y}");
            assert!((x as u64) * (y as u64) >= n as u64, "n={n}: {x}x{y} too small");
        }
    }
}
