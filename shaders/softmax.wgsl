// Row softmax, numerically stable (max-subtracted), one workgroup per row.
// ROWS (CPU adapters): one invocation per row, no workgroup memory and no barriers (each barrier splits a shader
// into resumable pieces on lavapipe / SwiftShader); an online max + rescaled sum pass, then the write pass.
// bindings: 1 x (rows, cols), 2 out (rows, cols)

override WG: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

#ifdef ROWS
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid.x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var m = -3.4e38;
    var s = 0.0;
    for (var i = 0u; i < p.cols; i++) {
        let v = x[base + i];
        let nm = max(m, v);
        s = s * exp(m - nm) + exp(v - nm);
        m = nm;
    }
    let inv = 1.0 / s;
    for (var i = 0u; i < p.cols; i++) {
        out[base + i] = exp(x[base + i] - m) * inv;
    }
}
#else
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) { return; }
    let lid = lid3.x;
    let base = row * p.cols;
    // online max + rescaled sum in one pass per invocation
    var m = -3.4e38;
    var s = 0.0;
    for (var i = lid; i < p.cols; i += WG) {
        let v = x[base + i];
        let nm = max(m, v);
        s = s * exp(m - nm) + exp(v - nm);
        m = nm;
    }
    red[lid] = m;
    workgroupBarrier();
    var k = WG / 2u;
    loop {
        if (k == 0u) { break; }
        if (lid < k) { red[lid] = max(red[lid], red[lid + k]); }
        workgroupBarrier();
        k = k / 2u;
    }
    let gm = red[0];
    workgroupBarrier();
    red[lid] = s * exp(m - gm);
    workgroupBarrier();
    k = WG / 2u;
    loop {
        if (k == 0u) { break; }
        if (lid < k) { red[lid] = red[lid] + red[lid + k]; }
        workgroupBarrier();
        k = k / 2u;
    }
    let inv = 1.0 / red[0];
    for (var i = lid; i < p.cols; i += WG) {
        out[base + i] = exp(x[base + i] - gm) * inv;
    }
}
#endif
