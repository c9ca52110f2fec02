//! Fuzz the GGUF parser: any bytes must parse or fail with an error — no panic, no huge allocation — and a parsed
//! file's tensors and metadata must be readable (or fail cleanly) through every accessor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webvlm_fuzz::loader::gguf::Gguf;
use webvlm_fuzz::loader::quant::split_gpu_layout;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(&data) else { return };
    for t in g.tensors() {
        if let (Ok(bytes), Ok(dtype)) = (g.tensor_bytes(&data, &t.name), t.dtype()) {
            let _ = g.tensor_f32(&data, &t.name);
            if let [cols, rows] = t.dims[..] {
                let _ = split_gpu_layout(dtype, &bytes, rows as usize, cols as usize);
            }
        }
    }
    for (k, _) in g.metadata() {
        let _ = (g.get_u32(k), g.get_i64(k), g.get_f32(k), g.get_str(k), g.get_str_array(k), g.get_f32_array(k));
    }
});
