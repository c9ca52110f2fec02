// Vision-tower data movement: patch unfolding (im2col for the stride-p patch convolution, whose GEMM is then
// ops::matmul::linear) and Idefics3's pixel shuffle. One invocation per output element, no barriers.
//
// UNFOLD (entry `unfold`): 1 pixels (C, H, W), 2 out (N, C*p*p) with N = (H/p)*(W/p) patches in row-major
//   order; column c*p*p + ky*p + kx of patch (py, px) = pixels[c, py*p + ky, px*p + kx] — the flattening of a
//   Conv2d weight [D, C, p, p], so out · wᵀ is the convolution (HF Conv2d(stride=p).flatten(2).transpose(1, 2)).
//   Pixels past the last whole patch (H or W not a multiple of p) are dropped, as the convolution does.
// SHUFFLE (entry `pixel_shuffle`): 1 x (g*g, D), 2 out (g*g/r², D*r²). Output row o = yb*(g/r) + xb, column
//   f = dy*(r*D) + dx*D + d holds x[(yb*r + dy)*g + xb*r + dx, d]: each output token concatenates an r×r block
//   of input tokens, row by row (port of Idefics3Connector.pixel_shuffle's view/permute/reshape chain).

override WG: u32 = 256u;

struct Params {
    a: u32,   // UNFOLD: channels C     SHUFFLE: grid g
    b: u32,   //         height H                scale r
    c: u32,   //         width W                 dim D
    d: u32,   //         patch p                 (unused)
    n: u32,   // output elements
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid.x;
}

#ifdef UNFOLD
@group(0) @binding(1) var<storage, read> pixels: array<f32>;     // (C, H, W)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (N, C*p*p)

@compute @workgroup_size(WG)
fn unfold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.n) { return; }
    let h = p.b;
    let w = p.c;
    let ps = p.d;
    let cols = p.a * ps * ps;
    let n = i / cols;          // patch
    let col = i % cols;
    let ch = col / (ps * ps);
    let ky = (col / ps) % ps;
    let kx = col % ps;
    let gw = w / ps;
    let py = n / gw;
    let px = n % gw;
    out[i] = pixels[(ch * h + py * ps + ky) * w + px * ps + kx];
}
#endif

#ifdef SHUFFLE
@group(0) @binding(1) var<storage, read> x: array<f32>;          // (g*g, D)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // (g*g/r², D*r²)

@compute @workgroup_size(WG)
fn pixel_shuffle(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if (i >= p.n) { return; }
    let g = p.a;
    let r = p.b;
    let d = p.c;
    let cols = d * r * r;
    let o = i / cols;
    let f = i % cols;
    let yb = o / (g / r);
    let xb = o % (g / r);
    let dy = f / (r * d);
    let dx = (f / d) % r;
    let e = f % d;
    out[i] = x[((yb * r + dy) * g + xb * r + dx) * d + e];
}
#endif
