// Activation functions (library: functions only), shared by elementwise.wgsl and the GEMM epilogues.

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const INV_SQRT_2: f32 = 0.7071067811865476;

// erf with |error| < 1.2e-7 (Numerical Recipes' erfc Chebyshev fit); WGSL has no erf builtin.
fn erf_approx(x: f32) -> f32 {
    let z = abs(x);
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
    return select(r - 1.0, 1.0 - r, x >= 0.0);
}

fn gelu_tanh(x: f32) -> f32 {
    // tanh(y) written with exp to stay accurate and avoid inf/inf for large |y|.
    let y = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    let e = exp(-2.0 * abs(y));
    let t = sign(y) * (1.0 - e) / (1.0 + e);
    return 0.5 * x * (1.0 + t);
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * INV_SQRT_2));
}

// The activation numbered `act` (0 none, 1 GELU tanh, 2 GELU erf, 3 SiLU: ops::matmul::Epilogue) on 4 values;
// `act` is an override constant at every call site, so the branches fold away.
fn activation4(act: u32, v: vec4<f32>) -> vec4<f32> {
    if (act == 1u) { return vec4<f32>(gelu_tanh(v.x), gelu_tanh(v.y), gelu_tanh(v.z), gelu_tanh(v.w)); }
    if (act == 2u) { return vec4<f32>(gelu_erf(v.x), gelu_erf(v.y), gelu_erf(v.z), gelu_erf(v.w)); }
    if (act == 3u) { return vec4<f32>(silu(v.x), silu(v.y), silu(v.z), silu(v.w)); }
    return v;
}
