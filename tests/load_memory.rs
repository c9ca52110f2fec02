//! Memory while loading the real SmolLM2-135M-Instruct GGUF natively: a counting global allocator records the
//! peak of live Rust heap bytes over the whole `Engine::load_gguf` (header, tokenizer, template, weights). Weights
//! are streamed to the GPU in row chunks (`ops::matmul::upload_ggml_chunked`), so the peak must stay below 1.5 ×
//! the largest tensor (the bound; before chunking this load peaked at 76 MB, 2.5 × its 30 MB `token_embd`).
//! Allocation sizes do not depend on timing, so this is a measurement, not a flaky timed test. The wasm heap in
//! the browser is measured separately (`engine.loadReport()`, docs/browser.md).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use webvlm::engine::Engine;
use webvlm::loader::gguf::Gguf;
use webvlm::loader::FileSource;
use webvlm::nn::LoadOptions;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            PEAK.fetch_max(LIVE.fetch_add(l.size(), Relaxed) + l.size(), Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[test]
fn loading_smollm2_peaks_below_one_and_a_half_largest_tensors() {
    let Some(path) = common::real_smollm2_gguf() else { return };
    let largest = {
        let src = FileSource::open(&path).unwrap();
        let g = Gguf::parse(&src).unwrap();
        g.tensors().iter().map(|t| t.n_bytes).max().unwrap() as usize
    };
    let ctx = pollster::block_on(common::ctx());
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let src = FileSource::open(&path).unwrap();
    let engine = Engine::load_gguf(ctx, Box::new(src), None, LoadOptions::default(), 512).expect("load");
    let peak = PEAK.load(Relaxed) - before;
    let after = LIVE.load(Relaxed) - before;
    let mb = |b: usize| b as f64 / 1e6;
    eprintln!(
        "load: peak {:.1} MB above the start ({:.2} × the largest tensor of {:.1} MB), {:.1} MB still live after",
        mb(peak),
        peak as f64 / largest as f64,
        mb(largest),
        mb(after)
    );
    assert!(peak * 2 < largest * 3, "peak {peak} bytes ≥ 1.5 × the largest tensor ({largest} bytes)");
    drop(engine);
}
