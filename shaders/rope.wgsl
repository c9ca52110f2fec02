// Rotary position embedding, applied to x (T, H, D) at positions pos0 + t, with cos/sin tables computed on the
// CPU in f64 (cos_sin: (max_pos, D/2) cos values, then (max_pos, D/2) sin values) so every rope-scaling
// variant (linear, llama3, ...) is only a different table, and large angles keep full precision.
// Layouts: default = Hugging Face rotate-half (pairs i, i + D/2); INTERLEAVED = GGUF/Meta (pairs 2i, 2i+1).
// One invocation per pair. bindings: 1 x, 2 cos_sin, 3 out (T, H, D)
// QKV (entry `qkv`): x is a fused projection's output, rows [q (H heads) | k (Hkv heads) | v (Hkv heads)] of
// (H + 2 Hkv) D; q is rotated into out (T, H, D), k rotated and v copied into the KV caches (Tmax, Hkv, D) at rows
// pos0 + t. This replaces two rope kernels and two cache copies per layer.
// bindings: 1 qkv, 2 cos_sin, 3 q out, 4 k cache, 5 v cache

override WG: u32 = 256u;

struct Params {
    t: u32,
    heads: u32,
    dim: u32,
    pos0: u32,
    max_pos: u32,
    kv_heads: u32, // QKV only
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> cos_sin: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#ifdef QKV
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;
#endif

// Offsets of the rotated pair `i` within a head.
fn pair(i: u32, half_d: u32) -> vec2<u32> {
#ifdef INTERLEAVED
    return vec2<u32>(2u * i, 2u * i + 1u);
#else
    return vec2<u32>(i, i + half_d);
#endif
}

// cos and sin of position `pos` for pair `i`.
fn angle(pos: u32, i: u32, half_d: u32) -> vec2<f32> {
    return vec2<f32>(cos_sin[pos * half_d + i], cos_sin[p.max_pos * half_d + pos * half_d + i]);
}

fn rotate(x0: f32, x1: f32, cs: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(x0 * cs.x - x1 * cs.y, x1 * cs.x + x0 * cs.y);
}

#ifndef QKV

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let half_d = p.dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (idx >= p.t * p.heads * half_d) { return; }
    let i = idx % half_d;
    let th = idx / half_d;        // t * heads + h
    let t = th / p.heads;
    let ab = vec2<u32>(th * p.dim) + pair(i, half_d);
    let r = rotate(x[ab.x], x[ab.y], angle(p.pos0 + t, i, half_d));
    out[ab.x] = r.x;
    out[ab.y] = r.y;
}
#else
@compute @workgroup_size(WG)
fn qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let half_d = p.dim / 2u;
    let heads = p.heads + 2u * p.kv_heads; // heads per row of x
    let idx = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (idx >= p.t * heads * half_d) { return; }
    let i = idx % half_d;
    let th = idx / half_d;        // t * heads + h
    let t = th / heads;
    let h = th % heads;
    let ab = pair(i, half_d);
    let src = vec2<u32>(th * p.dim) + ab;
    let x0 = x[src.x];
    let x1 = x[src.y];
    let pos = p.pos0 + t;
    if (h < p.heads) {
        let dst = vec2<u32>((t * p.heads + h) * p.dim) + ab;
        let r = rotate(x0, x1, angle(pos, i, half_d));
        out[dst.x] = r.x;
        out[dst.y] = r.y;
    } else if (h < p.heads + p.kv_heads) {
        let dst = vec2<u32>((pos * p.kv_heads + h - p.heads) * p.dim) + ab;
        let r = rotate(x0, x1, angle(pos, i, half_d));
        k_cache[dst.x] = r.x;
        k_cache[dst.y] = r.y;
    } else {
        let dst = vec2<u32>((pos * p.kv_heads + h - p.heads - p.kv_heads) * p.dim) + ab;
        v_cache[dst.x] = x0;
        v_cache[dst.y] = x1;
    }
}
#endif
