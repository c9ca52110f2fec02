// Decoders for GGUF block formats in webvlm's GPU layout (see src/gpu/tensor.rs): `qs` words hold the block's
// quant bytes exactly as ggml stores them; scales are f16 read with unpack2x16float (no shader-f16 needed).
// Included by kernels that declare `w: array<u32>` (the weight words). Library file: functions only.
//
// Each decoder returns 4 dequantized values for elements [4*k .. 4*k+3] of block `blk` (k in 0..8).

// Q8_0: 34-byte block = f16 d + 32 x i8; 8 qs words per block; scales two per word.
fn q8_0_scale(scales_off: u32, blk: u32) -> f32 {
    let s = unpack2x16float(w[scales_off + blk / 2u]);
    return select(s.x, s.y, (blk & 1u) == 1u);
}
// The 4 signed bytes of a Q8_0 quant word, sign-extended.
fn i8x4(word: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>(i32(word << 24u), i32(word << 16u), i32(word << 8u), i32(word)) >> vec4<u32>(24u));
}
fn q8_0_quad(blk: u32, k: u32, d: f32) -> vec4<f32> {
    return i8x4(w[blk * 8u + k]) * d;
}

// Q4_0: 18-byte block = f16 d + 16 bytes; byte j holds element j (low nibble) and j+16 (high nibble); x = (q-8)*d.
// Word k (k in 0..4) holds bytes 4k..4k+3 -> elements 4k..4k+3 (low nibbles) and 16+4k..16+4k+3 (high nibbles).
fn q4_0_scale(scales_off: u32, blk: u32) -> f32 {
    let s = unpack2x16float(w[scales_off + blk / 2u]);
    return select(s.x, s.y, (blk & 1u) == 1u);
}
// Converted from i32: one instruction on x86 (what lavapipe and SwiftShader run on), u32 -> f32 is several.
fn q4_lo(word: u32) -> vec4<f32> {
    return vec4<f32>(vec4<i32>((vec4<u32>(word) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(15u)));
}
fn q4_hi(word: u32) -> vec4<f32> {
    return q4_lo(word >> 4u);
}

// Q4_1: 20-byte block = f16 d + f16 m + 16 bytes; x = q*d + m; one scale word per block (d low, m high).
fn q4_1_dm(scales_off: u32, blk: u32) -> vec2<f32> {
    return unpack2x16float(w[scales_off + blk]);
}

// Element e (0..32) of a block, any format; for gathers (embedding rows), not for the hot GEMV loop.
fn dequant_one(fmt: u32, scales_off: u32, blk: u32, e: u32) -> f32 {
    if (fmt == 0u) { // Q8_0
        let word = w[blk * 8u + e / 4u];
        let sh = (e % 4u) * 8u;
        let q = i32(word << (24u - sh)) >> 24u;
        return f32(q) * q8_0_scale(scales_off, blk);
    }
    let j = e % 16u;
    let word = w[blk * 4u + j / 4u];
    let sh = (j % 4u) * 8u + select(0u, 4u, e >= 16u);
    let q = f32((word >> sh) & 15u);
    if (fmt == 1u) { // Q4_0
        return (q - 8.0) * q4_0_scale(scales_off, blk);
    }
    let dm = q4_1_dm(scales_off, blk); // Q4_1
    return q * dm.x + dm.y;
}
