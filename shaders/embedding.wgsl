// Embedding lookup: out[t, :] = table[ids[t], :], for tables in f32, f16 or bf16 (packed pairs) or a GGUF block
// format (dequantized on the fly with the ggml formulas). One invocation per output element.
// bindings: 1 ids (T) u32, 2 w = table words, 3 out (T, D) f32

override WG: u32 = 256u;

struct Params {
    t: u32,
    dim: u32,
    vocab: u32,
    // 0 = q8_0, 1 = q4_0, 2 = q4_1 (QUANT); ignored otherwise
    fmt: u32,
    scales_off: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
#ifdef F32
@group(0) @binding(2) var<storage, read> w: array<f32>;
#else
@group(0) @binding(2) var<storage, read> w: array<u32>;
#endif
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

#ifdef QUANT
#include quant
#endif
#ifdef BF16
#include half
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (idx >= p.t * p.dim) { return; }
    let t = idx / p.dim;
    let j = idx % p.dim;
    // out-of-range ids were rejected on the host; clamp anyway so a bad id can never read out of bounds
    let id = min(ids[t], p.vocab - 1u);
    let e = id * p.dim + j;
#ifdef F32
    out[idx] = w[e];
#endif
#ifdef F16
    let pair = unpack2x16float(w[e / 2u]);
    out[idx] = select(pair.x, pair.y, (e & 1u) == 1u);
#endif
#ifdef BF16
    let pair = unpack2x16bfloat(w[e / 2u]);
    out[idx] = select(pair.x, pair.y, (e & 1u) == 1u);
#endif
#ifdef QUANT
    out[idx] = dequant_one(p.fmt, p.scales_off, e / 32u, e % 32u);
#endif
}
