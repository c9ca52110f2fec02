//! The parsers under fuzz: `src/error.rs` and `src/loader/` of the main crate, compiled as this crate's own
//! modules (the loader only needs `crate::error`, `half` and `serde_json`), so the fuzz build skips wgpu.

#[path = "../../src/error.rs"]
pub mod error;
#[path = "../../src/loader/mod.rs"]
pub mod loader;
