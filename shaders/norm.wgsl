// Row normalization: RMSNorm (Llama) and LayerNorm (ViT). One workgroup per row; each invocation strides over
// the row, then a workgroup tree reduction. Statistics are accumulated in f32.
// ROWS (CPU adapters, cols % 4 == 0; entry `rows`): one invocation per row with vec4 loads and no workgroup
// memory or barriers, which cost CPU adapters more than the parallelism within a row saves.
// bindings: 1 x (rows, cols), 2 weight (cols), [3 bias (cols) for LAYER], then out (rows, cols);

override WG: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    // RMSNorm: Gemma-style (1 + w) when 1; Llama uses w (0)
    add_unit_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
#ifdef ROWS
@group(0) @binding(1) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>;
#ifdef LAYER
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> o4: array<vec4<f32>>;
#else
@group(0) @binding(3) var<storage, read_write> o4: array<vec4<f32>>;
#endif

fn hsum(v: vec4<f32>) -> f32 {
    return (v.x + v.y) + (v.z + v.w);
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + li;
    if (row >= p.rows) { return; }
    let c4 = p.cols / 4u;
    let base = row * c4;
    let n = f32(p.cols);
#ifdef LAYER
    var s = vec4<f32>(0.0);
    for (var i = 0u; i < c4; i++) { s += x4[base + i]; }
    let mean = vec4<f32>(hsum(s) / n);
    var v = vec4<f32>(0.0);
    for (var i = 0u; i < c4; i++) { let d = x4[base + i] - mean; v += d * d; }
    let inv = inverseSqrt(hsum(v) / n + p.eps);
    for (var i = 0u; i < c4; i++) {
        o4[base + i] = (x4[base + i] - mean) * inv * w4[i] + b4[i];
    }
#else
    var ss = vec4<f32>(0.0);
    for (var i = 0u; i < c4; i++) {
        let a = x4[base + i];
        ss += a * a;
    }
    let inv = inverseSqrt(hsum(ss) / n + p.eps);
    let off = vec4<f32>(f32(p.add_unit_offset));
    for (var i = 0u; i < c4; i++) {
        o4[base + i] = x4[base + i] * inv * (w4[i] + off);
    }
#endif
}
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
#ifdef LAYER
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#endif

var<workgroup> red: array<vec2<f32>, WG>;

fn reduce(lid: u32, v: vec2<f32>) -> vec2<f32> {
    red[lid] = v;
    workgroupBarrier();
    var s = WG / 2u;
    loop {
        if (s == 0u) { break; }
        if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
        workgroupBarrier();
        s = s / 2u;
    }
    return red[0];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; } // uniform per workgroup, so no barrier divergence
    let lid = lid3.x;
    let base = row * p.cols;
#ifdef LAYER
    // two-pass for accuracy: mean, then centered variance
    var s = 0.0;
    for (var i = lid; i < p.cols; i += WG) { s += x[base + i]; }
    let mean = reduce(lid, vec2<f32>(s, 0.0)).x / f32(p.cols);
    workgroupBarrier();
    var v = 0.0;
    for (var i = lid; i < p.cols; i += WG) { let d = x[base + i] - mean; v += d * d; }
    let var_ = reduce(lid, vec2<f32>(v, 0.0)).x / f32(p.cols);
    let inv = inverseSqrt(var_ + p.eps);
    for (var i = lid; i < p.cols; i += WG) {
        out[base + i] = (x[base + i] - mean) * inv * weight[i] + bias[i];
    }
#else
    var ss = 0.0;
    for (var i = lid; i < p.cols; i += WG) {
        let a = x[base + i];
        ss += a * a;
    }
    let ms = reduce(lid, vec2<f32>(ss, 0.0)).x / f32(p.cols);
    let inv = inverseSqrt(ms + p.eps);
    let off = f32(p.add_unit_offset);
    for (var i = lid; i < p.cols; i += WG) {
        out[base + i] = x[base + i] * inv * (weight[i] + off);
    }
#endif
}
#endif
