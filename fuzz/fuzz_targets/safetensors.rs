//! Fuzz the safetensors parser (and the shard index parser): any bytes must parse or fail with an error, and a
//! parsed file's tensors must be readable (or fail cleanly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use webvlm_fuzz::loader::safetensors::{parse_index, Safetensors};

fuzz_target!(|data: &[u8]| {
    let _ = parse_index(data);
    let Ok(st) = Safetensors::parse(&data) else { return };
    for t in st.tensors() {
        let _ = (st.tensor_bytes(&data, &t.name), st.tensor_f32(&data, &t.name), st.tensor_i64(&data, &t.name));
    }
});
