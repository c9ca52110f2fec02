// Tiled GEMM for prefill and the vision encoder: c[b, m, n] = sum_k a[b, m, k] * B(b, k, n) + bias[n].
// A 256-invocation workgroup computes a 64x64 tile of c, 4x4 outputs per invocation, stepping K by 32 through
// workgroup memory (two barriers per step). Ragged M, N, K: out-of-range tile loads are zero, stores are skipped.
//
// B variants (one per define; the default is f32):
//   default       w: array<f32>, B(k, n) = w[n * K + k] when p.trans_b (nn.Linear weight (N, K)), else w[k * N + n]
//   F16_WEIGHTS   w: (N, K) f16, two halves per u32 word (element 2i low), read with unpack2x16float
//   SHADER_F16    with F16_WEIGHTS: the B tile is held as f16 in workgroup memory (`enable f16`), half the bytes
//   BF16          with F16_WEIGHTS: the pairs are bf16 (unpack2x16bfloat of half.wgsl); the tile stays f32
//   Q8_0 / Q4_0 / Q4_1  w: (N, K) ggml blocks in the GPU layout of src/gpu/tensor.rs, K % 32 == 0; each tile
//                 step is exactly one block per weight row, dequantized into workgroup memory (never to memory)
// Epilogue: c = act(a·B + bias) with ACT (activation4 of activation.wgsl), then + res with RESIDUAL (res laid out
// like c).
#ifdef SHADER_F16
enable f16;
#endif

override ACT: u32 = 0u;

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 32u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    trans_b: u32,
    scales_offset: u32, // quantized B: word offset of the scales section
    has_bias: u32,
    a_batch: u32,       // element strides between batches (0 broadcasts)
    b_batch: u32,
    c_batch: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;        // (batch, M, K)
#ifdef F16_WEIGHTS
@group(0) @binding(2) var<storage, read> w: array<u32>;        // (N, K) f16 pairs
#else
#ifdef QUANT
@group(0) @binding(2) var<storage, read> w: array<u32>;        // (N, K) qs words, then scales
#else
@group(0) @binding(2) var<storage, read> w: array<f32>;        // (batch, N, K) or (batch, K, N)
#endif
#endif
@group(0) @binding(3) var<storage, read> bias: array<f32>;     // (N); `a` again when there is no bias
@group(0) @binding(4) var<storage, read_write> c: array<f32>;  // (batch, M, N)
#ifdef RESIDUAL
@group(0) @binding(5) var<storage, read> res: array<f32>;      // added to c, same layout
#endif

#include activation
#include half

#ifdef QUANT
#include quant
#endif

// k-major tiles: as_[k * BM/4 + i] holds rows 4i..4i+3 at depth k, bs[k * BN/4 + j] columns 4j..4j+3.
var<workgroup> as_: array<vec4<f32>, 512>; // BK * BM / 4
#ifdef SHADER_F16
var<workgroup> bs: array<vec4<f16>, 512>;  // BK * BN / 4
#else
var<workgroup> bs: array<vec4<f32>, 512>;
#endif

fn put_b(k: u32, n: u32, v: f32) {
#ifdef SHADER_F16
    bs[k * (BN / 4u) + n / 4u][n % 4u] = f16(v);
#else
    bs[k * (BN / 4u) + n / 4u][n % 4u] = v;
#endif
}

fn get_b(i: u32) -> vec4<f32> {
#ifdef SHADER_F16
    return vec4<f32>(bs[i]);
#else
    return bs[i];
#endif
}

// Each invocation loads 8 consecutive k of one row of A and of B (B: one row of the (N, K) weight); for an
// untransposed f32 B, 8 consecutive n of one k row.
fn load_tiles(t: u32, m0: u32, n0: u32, k0: u32, a_off: u32, b_off: u32) {
    let r = t / 4u;
    let kk = (t % 4u) * 8u;
    let gm = m0 + r;
    for (var e = 0u; e < 8u; e++) {
        let gk = k0 + kk + e;
        var v = 0.0;
        if (gm < p.m && gk < p.k) { v = a[a_off + gm * p.k + gk]; }
        as_[(kk + e) * (BM / 4u) + r / 4u][r % 4u] = v;
    }
    let gn = n0 + r;
#ifdef QUANT
    // one block per weight row: part = t % 4 covers elements 8*part .. 8*part+7 of block k0 / 32
    let part = t % 4u;
    if (gn < p.n) {
        let blk = gn * (p.k / 32u) + k0 / 32u;
#ifdef Q8_0
        let d = q8_0_scale(p.scales_offset, blk);
        let v0 = q8_0_quad(blk, 2u * part, d);
        let v1 = q8_0_quad(blk, 2u * part + 1u, d);
#else
        // elements 0..15 are low nibbles of words 0..3, 16..31 high nibbles
        let w0 = w[blk * 4u + (part % 2u) * 2u];
        let w1 = w[blk * 4u + (part % 2u) * 2u + 1u];
        var n0v = q4_lo(w0);
        var n1v = q4_lo(w1);
        if (part >= 2u) {
            n0v = q4_hi(w0);
            n1v = q4_hi(w1);
        }
#ifdef Q4_0
        let d = q4_0_scale(p.scales_offset, blk);
        let v0 = (n0v - 8.0) * d;
        let v1 = (n1v - 8.0) * d;
#else
        let dm = q4_1_dm(p.scales_offset, blk);
        let v0 = n0v * dm.x + dm.y;
        let v1 = n1v * dm.x + dm.y;
#endif
#endif
        for (var e = 0u; e < 4u; e++) {
            put_b(kk + e, r, v0[e]);
            put_b(kk + 4u + e, r, v1[e]);
        }
    } else {
        for (var e = 0u; e < 8u; e++) { put_b(kk + e, r, 0.0); }
    }
#else
#ifdef F16_WEIGHTS
    for (var e = 0u; e < 8u; e++) {
        let gk = k0 + kk + e;
        var v = 0.0;
        if (gn < p.n && gk < p.k) {
            let i = gn * p.k + gk;
#ifdef BF16
            let h = unpack2x16bfloat(w[i / 2u]);
#else
            let h = unpack2x16float(w[i / 2u]);
#endif
            v = select(h.x, h.y, (i & 1u) == 1u);
        }
        put_b(kk + e, r, v);
    }
#else
    if (p.trans_b != 0u) {
        for (var e = 0u; e < 8u; e++) {
            let gk = k0 + kk + e;
            var v = 0.0;
            if (gn < p.n && gk < p.k) { v = w[b_off + gn * p.k + gk]; }
            put_b(kk + e, r, v);
        }
    } else {
        let bk = t / 8u;
        let nn = (t % 8u) * 8u;
        let gk = k0 + bk;
        for (var e = 0u; e < 8u; e++) {
            let gn2 = n0 + nn + e;
            var v = 0.0;
            if (gn2 < p.n && gk < p.k) { v = w[b_off + gk * p.n + gn2]; }
            put_b(bk, nn + e, v);
        }
    }
#endif
#endif
}

@compute @workgroup_size(256)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let n0 = wid.x * BN;
    let m0 = wid.y * BM;
    let batch = wid.z;
    let a_off = batch * p.a_batch;
    let b_off = batch * p.b_batch;
    let tx = t % 16u; // columns 4tx .. 4tx+3
    let ty = t / 16u; // rows 4ty .. 4ty+3
    var c0 = vec4<f32>(0.0);
    var c1 = vec4<f32>(0.0);
    var c2 = vec4<f32>(0.0);
    var c3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        load_tiles(t, m0, n0, k0, a_off, b_off);
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let av = as_[kk * (BM / 4u) + ty];
            let bv = get_b(kk * (BN / 4u) + tx);
            c0 = fma(vec4<f32>(av.x), bv, c0);
            c1 = fma(vec4<f32>(av.y), bv, c1);
            c2 = fma(vec4<f32>(av.z), bv, c2);
            c3 = fma(vec4<f32>(av.w), bv, c3);
        }
        workgroupBarrier();
    }
    let gn = n0 + 4u * tx;
    var bv = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        for (var j = 0u; j < 4u; j++) {
            if (gn + j < p.n) { bv[j] = bias[gn + j]; }
        }
    }
    let c_off = batch * p.c_batch;
    var rows = array<vec4<f32>, 4>(activation4(ACT, c0 + bv), activation4(ACT, c1 + bv), activation4(ACT, c2 + bv),
                                   activation4(ACT, c3 + bv));
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + 4u * ty + i;
        if (gm >= p.m) { break; }
        for (var j = 0u; j < 4u; j++) {
            if (gn + j < p.n) {
                let ci = c_off + gm * p.n + gn + j;
#ifdef RESIDUAL
                c[ci] = rows[i][j] + res[ci];
#else
                c[ci] = rows[i][j];
#endif
            }
        }
    }
}
