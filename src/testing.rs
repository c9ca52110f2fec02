//! Helpers shared by the kernel tests (native and wasm) and the benchmark: a seeded PRNG and a comparison that
//! names the worst index with the max and mean error.

/// xorshift64* — small, seeded, identical on every target.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }
    /// Uniform integer in [lo, hi].
    pub fn usize(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
    /// Approximately normal (sum of uniforms), mean 0, std `std`.
    pub fn normal_vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n).map(|_| (0..4).map(|_| self.f32() - 0.5).sum::<f32>() * std * 1.732).collect()
    }
}

/// Error statistics of `got` against `want`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Diff {
    pub max_abs: f32,
    pub mean_abs: f32,
    pub worst_index: usize,
    pub worst_got: f32,
    pub worst_want: f32,
}

pub fn diff(got: &[f32], want: &[f32]) -> Diff {
    let mut d = Diff { max_abs: 0.0, mean_abs: 0.0, worst_index: 0, worst_got: 0.0, worst_want: 0.0 };
    let mut sum = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let e = if g.is_nan() != w.is_nan() {
            f32::INFINITY
        } else if g.is_nan() {
            0.0
        } else {
            (g - w).abs()
        };
        sum += e as f64;
        if e > d.max_abs || (i == 0 && e.is_infinite()) {
            d = Diff { max_abs: e, worst_index: i, worst_got: *g, worst_want: *w, ..d };
        }
    }
    d.mean_abs = if got.is_empty() { 0.0 } else { (sum / got.len() as f64) as f32 };
    d
}

/// Checks `|got - want| <= atol + rtol * |want|` everywhere; the error names the worst index and the max/mean
/// error.
pub fn check_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) -> Result<Diff, String> {
    if got.len() != want.len() {
        return Err(format!("{what}: length {} != expected {}", got.len(), want.len()));
    }
    let d = diff(got, want);
    let mut worst_excess = 0.0f32;
    let mut worst = None;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        let e = (g - w).abs();
        if !(e <= tol) && (e - tol > worst_excess || worst.is_none()) {
            worst_excess = e - tol;
            worst = Some(i);
        }
    }
    match worst {
        None => Ok(d),
        Some(i) => Err(format!(
            "{what}: out of tolerance (atol {atol:e}, rtol {rtol:e}) at index {i}: got {} want {}; \
             max abs err {:e} at {}, mean abs err {:e}, n = {}",
            got[i],
            want[i],
            d.max_abs,
            d.worst_index,
            d.mean_abs,
            got.len()
        )),
    }
}
