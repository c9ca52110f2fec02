// The memory-bandwidth yardsticks of the benchmarks (src/gpu/bench.rs): GEMV GB/s are reported as a ratio to these
// kernels' GB/s on the same adapter.
// - copy: a plain vec4 copy, dst[i] = src[i] (bytes read + written);
// - read_sum: reads every vec4 of src once (READS consecutive grid-strided vec4 per invocation, summed) and stores
//   nothing unless the sum is -1 (never, for the benchmark's data; the compiler cannot know): what a GEMV does
//   with its weights, without the stores, which CPU adapters pay as a per-lane scatter and a write-allocate read.
// bindings: 1 src (n4 vec4), 2 dst (n4 vec4)

override WG: u32 = 256u;
override READS: u32 = 4u;

struct Params {
    n4: u32, // vec4 elements
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + li;
    if (i < p.n4) {
        dst[i] = src[i];
    }
}

@compute @workgroup_size(WG)
fn read_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG * READS + li;
    var s = vec4<f32>(0.0);
    for (var r = 0u; r < READS; r++) {
        let j = i + r * WG;
        if (j < p.n4) {
            s += src[j];
        }
    }
    if (dot(s, vec4<f32>(1.0)) == -1.0) {
        dst[i] = s;
    }
}
