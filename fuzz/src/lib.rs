//! The parsers under fuzz: `src/error.rs` and the GPU-free files of `src/loader/` from the main crate, compiled
//! as this crate's own modules (they need only `crate::error`, `half` and `serde_json`), so a fuzz build neither
//! instruments nor compiles wgpu. `src/loader/mod.rs` itself is left out: it also bridges to `crate::gpu`.

#[path = "../../src/error.rs"]
pub mod error;
pub mod loader;
