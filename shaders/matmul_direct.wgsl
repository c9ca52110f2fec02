// Barrier-free GEMM for CPU-emulated adapters (lavapipe, SwiftShader): y[m, n] = sum_k x[m, k] * w[n, k] + bias[n].
//
// Each invocation computes 4 output columns (weight rows n0..n0+3) for 8 rows of x (m0..m0+7, from wid.y): per
// 4-element chunk of K it takes 4 weight chunks and 8 x chunks and does 32 dot products (`mac`; quantized weights
// load each 32-element block's words and scale once per column, see block_words). The x indices depend only
// on the workgroup and the loop counter, so every lane loads the same x address (a broadcast on CPU adapters,
// which run invocations as SIMD lanes and pay a gather for per-lane addresses); only the weight loads are per
// lane. No workgroup memory, no barriers: both cost CPU adapters far more than the cache traffic they save.
// Measured on lavapipe (docs/benchmarks.md): 2.9 x the tiled kernel of matmul.wgsl on ViT-shaped f32 problems.
//
// Weights in webvlm's GPU layouts (src/gpu/tensor.rs), FMT: 0 f32, 1 f16, 2 q8_0, 3 q4_0, 4 q4_1, 5 bf16.
// K % 4 == 0 (f32), K % 8 == 0 (f16, bf16), K % 32 == 0 (quantized). Rows past N and M are clamped on load and
// not stored.
//
// Strided and batched (the matrices of attention, read in place from [T, H, D] tensors): batch b = wid.z reads row
// r of x at x_off + b * x_batch + r * x_stride (vec4 units), row c of an f32 w likewise, and writes y[m, n] at
// y_off + b * y_batch + m * y_stride + n; y = alpha * x·wᵀ + bias. For linear layers the strides are the
// contiguous ones, the offsets 0 and alpha 1.
//
// Epilogue (linear layers): y = act(x·wᵀ + bias) with ACT (activation4 of activation.wgsl), then + res[m, n]
// with RESIDUAL (res laid out like y): a ViT MLP's GELU and its residual adds without extra passes over y.
//
// SG_X (with SG4 or SG8: the adapter's fixed subgroup size): the 8 x rows are loaded once per subgroup and shared
// by subgroupBroadcast (lane s loads rows m0 + s and, with SG4, m0 + 4 + s). On SwiftShader every load is an
// emulated gather per component, even when all lanes read one address, so this cuts the loads of a k-step from
// 48 to 24 per lane (measured +25 % on its f32 GEMM, docs/benchmarks.md).

#ifdef SG_X
#enable subgroups
#endif
#ifdef SG4
const HI = 0u; // the lane holding row 4 in the vector it is broadcast from
#endif
#ifdef SG8
const HI = 4u;
#endif
override WG: u32 = 64u;
override FMT: u32 = 0u;
override ACT: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    scales_offset: u32, // in u32 words
    has_bias: u32,
    alpha: f32,
    x_off: u32,         // vec4 units
    x_stride: u32,
    x_batch: u32,
    w_off: u32,         // vec4 units, f32 weights only
    w_stride: u32,
    w_batch: u32,
    y_off: u32,         // elements
    y_stride: u32,
    y_batch: u32,
    _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;   // (M, K)
@group(0) @binding(2) var<storage, read> w4: array<vec4<u32>>;  // (N, K), f32 as vec4 words
@group(0) @binding(3) var<storage, read> bias: array<f32>;      // (N); x again when there is no bias
#ifdef Y4
// y_off, y_stride, y_batch and N multiples of 4: each row's 4 outputs are one aligned vec4 store
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;
#else
@group(0) @binding(4) var<storage, read_write> y: array<f32>;   // (M, N)
#endif
@group(0) @binding(5) var<storage, read> w: array<u32>;         // the weight buffer again, as words
#ifdef RESIDUAL
#ifdef Y4
@group(0) @binding(6) var<storage, read> res4: array<vec4<f32>>; // added to y, same layout
#else
@group(0) @binding(6) var<storage, read> res: array<f32>;
#endif
#endif

#include quant
#include activation
#include half

// Elements 4i .. 4i+3 of float weight row `c` (`wb`: the batch's first f32 weight row, in vec4 units).
fn chunk(wb: u32, c: u32, i: u32) -> vec4<f32> {
    if (FMT == 0u) {
        return bitcast<vec4<f32>>(w4[wb + c * p.w_stride + i]);
    }
    let base = c * (p.k / 2u) + 2u * i;
    if (FMT == 5u) {
        return vec4<f32>(unpack2x16bfloat(w[base]), unpack2x16bfloat(w[base + 1u]));
    }
    return vec4<f32>(unpack2x16float(w[base]), unpack2x16float(w[base + 1u]));
}

// Quantized weights go by 32-element blocks: per block and column one scale and the block's quant words (one
// vec4: Q4's 16 bytes; two for Q8_0's 32) are loaded once, and its 8 chunks are cut from them in registers —
// instead of a word and a scale gather per chunk (CPU adapters emulate every lane's load as a gather).
// Half `h` of block `blk`'s words: Q8_0 words 4h .. 4h + 3; Q4 the same 4 words for both halves (low, high nibbles).
fn block_words(blk: u32, h: u32) -> vec4<u32> {
    if (FMT == 2u) {
        return w4[blk * 2u + h];
    }
    return w4[blk];
}

// (d, m) with value = q·d + m: Q8_0 (d, 0), Q4_0 (d, −8d), Q4_1 (d, m).
fn block_scale(blk: u32) -> vec2<f32> {
    if (FMT == 4u) {
        return q4_1_dm(p.scales_offset, blk);
    }
    let d = q8_0_scale(p.scales_offset, blk); // Q8_0 and Q4_0 store their f16 d the same way
    return vec2<f32>(d, select(-8.0 * d, 0.0, FMT == 2u));
}

// The 4 values of one quant word: Q8_0 its signed bytes; Q4 the low (h = 0) or high (h = 1) nibble of each byte.
fn dequant(word: u32, s: vec2<f32>, h: u32) -> vec4<f32> {
    var q: vec4<f32>;
    if (FMT == 2u) {
        q = i8x4(word);
    } else {
        q = q4_lo(word >> (4u * h));
    }
    return fma(q, vec4<f32>(s.x), vec4<f32>(s.y));
}

fn dots(xv: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(xv, w0), dot(xv, w1), dot(xv, w2), dot(xv, w3));
}

// The 8 rows' accumulators (rows m0 .. m0 + 7, each 4 columns)
alias Acc = array<vec4<f32>, 8>;

// `acc` plus x chunk i of the 8 rows dotted with the 4 columns' weight chunks. `ra` / `rb`: the rows' offsets
// (SG_X: this lane's rows in ra.x, and ra.y with SG4).
fn mac(acc: Acc, ra: vec4<u32>, rb: vec4<u32>, i: u32, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>,
       w3: vec4<f32>) -> Acc {
#ifdef SG_X
    // rows 0-3 from lanes 0-3 of xa; rows 4-7 from lanes 0-3 of xc (SG4) or lanes 4-7 of xa (SG8)
    let xa = x[ra.x + i];
#ifdef SG4
    let xc = x[ra.y + i];
#else
    let xc = xa;
#endif
    return Acc(acc[0] + dots(subgroupBroadcast(xa, 0u), w0, w1, w2, w3),
               acc[1] + dots(subgroupBroadcast(xa, 1u), w0, w1, w2, w3),
               acc[2] + dots(subgroupBroadcast(xa, 2u), w0, w1, w2, w3),
               acc[3] + dots(subgroupBroadcast(xa, 3u), w0, w1, w2, w3),
               acc[4] + dots(subgroupBroadcast(xc, HI + 0u), w0, w1, w2, w3),
               acc[5] + dots(subgroupBroadcast(xc, HI + 1u), w0, w1, w2, w3),
               acc[6] + dots(subgroupBroadcast(xc, HI + 2u), w0, w1, w2, w3),
               acc[7] + dots(subgroupBroadcast(xc, HI + 3u), w0, w1, w2, w3));
#else
    return Acc(acc[0] + dots(x[ra.x + i], w0, w1, w2, w3), acc[1] + dots(x[ra.y + i], w0, w1, w2, w3),
               acc[2] + dots(x[ra.z + i], w0, w1, w2, w3), acc[3] + dots(x[ra.w + i], w0, w1, w2, w3),
               acc[4] + dots(x[rb.x + i], w0, w1, w2, w3), acc[5] + dots(x[rb.y + i], w0, w1, w2, w3),
               acc[6] + dots(x[rb.z + i], w0, w1, w2, w3), acc[7] + dots(x[rb.w + i], w0, w1, w2, w3));
#endif
}

// Four k-steps i .. i + 3 from the 4 columns' quant words (word t of each column for step i + t) and scales;
// `h`: the Q4 nibble half (ignored for Q8_0, whose halves are different words).
fn mac_words(acc: Acc, ra: vec4<u32>, rb: vec4<u32>, i: u32, q0: vec4<u32>, q1: vec4<u32>, q2: vec4<u32>,
             q3: vec4<u32>, s: array<vec2<f32>, 4>, h: u32) -> Acc {
    var a = mac(acc, ra, rb, i, dequant(q0.x, s[0], h), dequant(q1.x, s[1], h), dequant(q2.x, s[2], h),
                dequant(q3.x, s[3], h));
    a = mac(a, ra, rb, i + 1u, dequant(q0.y, s[0], h), dequant(q1.y, s[1], h), dequant(q2.y, s[2], h),
            dequant(q3.y, s[3], h));
    a = mac(a, ra, rb, i + 2u, dequant(q0.z, s[0], h), dequant(q1.z, s[1], h), dequant(q2.z, s[2], h),
            dequant(q3.z, s[3], h));
    return mac(a, ra, rb, i + 3u, dequant(q0.w, s[0], h), dequant(q1.w, s[1], h), dequant(q2.w, s[2], h),
               dequant(q3.w, s[3], h));
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
#ifdef SG_X
    @builtin(subgroup_invocation_id) sl: u32,
#endif
) {
    let n0 = (wid.x * WG + li) * 4u;
    let m0 = wid.y * 8u;
    let k4 = p.k / 4u;
    let wb = p.w_off + wid.z * p.w_batch;
    let xb = vec4<u32>(p.x_off + wid.z * p.x_batch);
    let c = min(vec4<u32>(n0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    var ra = min(vec4<u32>(m0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u)) * p.x_stride + xb;
    let rb = min(vec4<u32>(m0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(p.m - 1u)) * p.x_stride + xb;
#ifdef SG_X
    // this lane's share of the x rows (the rows past M clamped like above)
    ra.x = min(m0 + sl, p.m - 1u) * p.x_stride + xb.x;
#ifdef SG4
    ra.y = min(m0 + 4u + sl, p.m - 1u) * p.x_stride + xb.x;
#endif
#endif
    var a = Acc();
    if (FMT < 2u || FMT == 5u) {
        for (var i = 0u; i < k4; i++) {
            a = mac(a, ra, rb, i, chunk(wb, c.x, i), chunk(wb, c.y, i), chunk(wb, c.z, i), chunk(wb, c.w, i));
        }
    } else {
        let nb = p.k / 32u;
        let cb = c * nb;
        for (var j = 0u; j < nb; j++) {
            let i = 8u * j;
            let s = array<vec2<f32>, 4>(block_scale(cb.x + j), block_scale(cb.y + j), block_scale(cb.z + j),
                                        block_scale(cb.w + j));
            var q0 = block_words(cb.x + j, 0u);
            var q1 = block_words(cb.y + j, 0u);
            var q2 = block_words(cb.z + j, 0u);
            var q3 = block_words(cb.w + j, 0u);
            a = mac_words(a, ra, rb, i, q0, q1, q2, q3, s, 0u);
            if (FMT == 2u) {
                q0 = block_words(cb.x + j, 1u);
                q1 = block_words(cb.y + j, 1u);
                q2 = block_words(cb.z + j, 1u);
                q3 = block_words(cb.w + j, 1u);
            }
            a = mac_words(a, ra, rb, i + 4u, q0, q1, q2, q3, s, 1u);
        }
    }
    var b = vec4<f32>(0.0);
    if (p.has_bias != 0u) {
        b = vec4<f32>(bias[c.x], bias[c.y], bias[c.z], bias[c.w]);
    }
    let al = p.alpha;
    let acc = Acc(al * a[0] + b, al * a[1] + b, al * a[2] + b, al * a[3] + b,
                  al * a[4] + b, al * a[5] + b, al * a[6] + b, al * a[7] + b);
    let yb = p.y_off + wid.z * p.y_batch;
#ifdef Y4
    if (n0 >= p.n) { return; }
    for (var j = 0u; j < 8u; j++) {
        if (m0 + j < p.m) {
            let i = (yb + (m0 + j) * p.y_stride + n0) / 4u;
            var v = activation4(ACT, acc[j]);
#ifdef RESIDUAL
            v += res4[i];
#endif
            y4[i] = v;
        }
    }
#else
    for (var j = 0u; j < 8u; j++) {
        let m = m0 + j;
        if (m < p.m) {
            let v = activation4(ACT, acc[j]);
            for (var e = 0u; e < 4u; e++) {
                if (n0 + e < p.n) {
                    let i = yb + m * p.y_stride + n0 + e;
#ifdef RESIDUAL
                    y[i] = v[e] + res[i];
#else
                    y[i] = v[e];
#endif
                }
            }
        }
    }
#endif
}
