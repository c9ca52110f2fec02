//! WGSL sources and their tiny preprocessor.
//!
//! Shaders are real `.wgsl` files under `shaders/`, compiled into the binary with `include_str!`. Variants are
//! made by `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` (nestable) on lines of their own; defines are
//! names (set) with optional values substituted where `{{NAME}}` appears. `#include NAME` pastes a library file
//! (functions only, e.g. the quantized-block decoders in `quant.wgsl`). `#enable NAME` becomes `enable NAME;` in
//! the browser only (Chromium requires `enable subgroups;`, naga rejects it and enables subgroups by capability). Numeric tuning knobs that do not
//! change the code's shape (workgroup sizes, tile sizes) are WGSL `override` constants instead, so one module
//! serves them all.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A shader file and the define sets it is compiled with (each must pass naga validation).
pub struct ShaderFile {
    pub name: &'static str,
    pub source: &'static str,
    /// Every define combination used by the ops, for the validation test.
    pub variants: &'static [&'static [&'static str]],
}

macro_rules! shader {
    ($name:literal, [$($variant:expr),* $(,)?]) => {
        ShaderFile {
            name: $name,
            source: include_str!(concat!("../../shaders/", $name, ".wgsl")),
            variants: &[$($variant),*],
        }
    };
}

/// All shader files. An op refers to its file by `name`.
pub static SHADERS: &[ShaderFile] = &[
    shader!("quant", []),      // library: validated inside its includers
    shader!("activation", []), // library
    shader!("half", []),       // library
    shader!("copy", [&[]]),
    shader!(
        "matmul_direct",
        [
            &[],
            &["Y4"],
            &["SG_X", "SG4"],
            &["SG_X", "SG8"],
            &["Y4", "SG_X", "SG4"],
            &["Y4", "SG_X", "SG8"],
            &["RESIDUAL"],
            &["Y4", "RESIDUAL", "SG_X", "SG4"]
        ]
    ),
    shader!("elementwise", [&[], &["BINARY"]]),
    shader!("norm", [&[], &["LAYER"], &["ROWS"], &["LAYER", "ROWS"]]),
    shader!("softmax", [&[], &["ROWS"], &["ROWS", "VEC4"], &["IN_PLACE"], &["ROWS", "VEC4", "IN_PLACE"]]),
    shader!("rope", [&[], &["INTERLEAVED"], &["QKV"], &["QKV", "INTERLEAVED"]]),
    shader!("embedding", [&["F32"], &["F16"], &["BF16"], &["QUANT"]]),
    shader!(
        "matmul",
        [
            &[],
            &["F16_WEIGHTS"],
            &["F16_WEIGHTS", "SHADER_F16"],
            &["F16_WEIGHTS", "BF16"],
            &["QUANT", "Q8_0"],
            &["QUANT", "Q4_0"],
            &["QUANT", "Q4_1"],
            &["RESIDUAL"]
        ]
    ),
    shader!(
        "gemv",
        [
            &[],
            &["SUBGROUP_OPS", "SUBGROUPS"],
            &["SWIGLU"],
            &["SUBGROUP_OPS", "SUBGROUPS", "SWIGLU"],
            &["SUBGROUP_OPS", "SG_X", "SG4"],
            &["SUBGROUP_OPS", "SG_X", "SG8", "SWIGLU"],
            &["ROPE"],
            &["SUBGROUP_OPS", "ROPE", "INTERLEAVED", "SG_X", "SG8"],
            &["SUBGROUP_OPS", "ROPE", "SUBGROUPS"],
            &["SUBGROUP_OPS", "ROPE", "INTERLEAVED", "SUBGROUPS"],
            &["SUBGROUP_OPS", "NORM", "ROPE", "SG_X", "SG8"],
            &["SUBGROUP_OPS", "NORM", "SWIGLU", "SUBGROUPS"],
            &["SUBGROUP_OPS", "NORM"],
            &["RESIDUAL"],
            &["SUBGROUP_OPS", "SUBGROUPS", "RESIDUAL"]
        ]
    ),
    shader!("attention", [&[], &["SPLIT"], &["COMBINE"], &["TRANSPOSE_V"], &["SG_KEYS"], &["SG_KEYS", "SPLIT"]]),
    shader!("vision", [&["UNFOLD"], &["SHUFFLE"]]),
    shader!(
        "sample",
        [
            &["ARGMAX_PARTIAL"],
            &["ARGMAX_FINAL"],
            &["STATS"],
            &["THRESHOLD"],
            &["COUNT"],
            &["COMPACT"],
            &["RANK"],
            &["PICK"],
            &["PENALTY"]
        ]
    ),
];

pub fn source(name: &str) -> Result<&'static str> {
    SHADERS
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.source)
        .ok_or_else(|| Error::Shader { shader: name.to_string(), message: "no such shader file".into() })
}

/// Applies `#ifdef`/`#ifndef`/`#else`/`#endif` and `{{NAME}}` substitution.
pub fn preprocess(name: &str, src: &str, defines: &BTreeMap<String, String>) -> Result<String> {
    let err = |line: usize, msg: &str| Error::Shader {
        shader: name.to_string(),
        message: format!("line {}: {msg}", line + 1),
    };
    let mut out = String::with_capacity(src.len());
    // Stack of (this branch active, any branch taken) for each open #if.
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.iter().all(|(a, _)| *a);
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("#ifdef ").or_else(|| t.strip_prefix("#ifndef ")) {
            let name = rest.trim();
            let neg = t.starts_with("#ifndef");
            let cond = defines.contains_key(name) != neg;
            stack.push((cond, cond));
        } else if t.starts_with("#else") {
            let top = stack.last_mut().ok_or_else(|| err(i, "#else without #ifdef"))?;
            top.0 = !top.1;
            top.1 = true;
        } else if t.starts_with("#endif") {
            stack.pop().ok_or_else(|| err(i, "#endif without #ifdef"))?;
        } else if let Some(lib) = t.strip_prefix("#include ") {
            if active(&stack) {
                let inc = source(lib.trim())?;
                out.push_str(&preprocess(lib.trim(), inc, defines)?);
            }
            out.push('\n');
        } else if let Some(ext) = t.strip_prefix("#enable ") {
            // a WGSL `enable` the browser requires but naga (native) rejects as unimplemented: `subgroups`
            if active(&stack) && cfg!(target_arch = "wasm32") {
                out.push_str(&format!("enable {};", ext.trim()));
            }
            out.push('\n');
        } else if t.starts_with('#') {
            return Err(err(i, &format!("unknown directive `{t}`")));
        } else if active(&stack) {
            if line.contains("{{") {
                let mut l = line.to_string();
                for (k, v) in defines {
                    l = l.replace(&format!("{{{{{k}}}}}"), v);
                }
                if l.contains("{{") {
                    return Err(err(i, "undefined {{…}} substitution"));
                }
                out.push_str(&l);
            } else {
                out.push_str(line);
            }
            out.push('\n');
        } else {
            // keep line numbers stable for error messages
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(err(src.lines().count(), "unterminated #ifdef"));
    }
    Ok(out)
}

/// Validates WGSL with naga (the same front end wgpu uses natively). Used before module creation natively so a
/// broken shader is a typed error instead of a device error, and by the variant test.
#[cfg(not(target_arch = "wasm32"))]
pub fn validate(name: &str, wgsl: &str) -> Result<()> {
    let module = naga::front::wgsl::parse_str(wgsl)
        .map_err(|e| Error::Shader { shader: name.to_string(), message: e.emit_to_string(wgsl) })?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| Error::Shader { shader: name.to_string(), message: e.emit_to_string(wgsl) })?;
    Ok(())
}

#[cfg(all(test, not(target_arch = "wasm32")))] // validation uses naga, native only
mod tests {
    use super::*;

    fn defs(names: &[&str]) -> BTreeMap<String, String> {
        names.iter().map(|n| (n.to_string(), String::new())).collect()
    }

    #[test]
    fn ifdef_else_nesting() {
        let src = "a\n#ifdef X\nb\n#ifndef Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf {{N}}\n";
        let mut d = defs(&["X"]);
        d.insert("N".into(), "7".into());
        let out = preprocess("t", src, &d).unwrap();
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines, ["a", "b", "c", "f 7"]);
        let mut d = defs(&["Y"]);
        d.insert("N".into(), "1".into());
        let out = preprocess("t", src, &d).unwrap();
        let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines, ["a", "e", "f 1"]);
    }

    #[test]
    fn preprocess_errors_are_typed() {
        assert!(matches!(preprocess("t", "#endif\n", &defs(&[])), Err(Error::Shader { .. })));
        assert!(matches!(preprocess("t", "#ifdef A\n", &defs(&[])), Err(Error::Shader { .. })));
        assert!(matches!(preprocess("t", "x {{MISSING}}\n", &defs(&[])), Err(Error::Shader { .. })));
    }

    /// Every shader file, in every variant the ops use, passes naga validation. Needs no GPU.
    #[test]
    fn every_shader_variant_validates() {
        let mut failures = Vec::new();
        for f in SHADERS {
            for v in f.variants {
                let d = defs(v);
                match preprocess(f.name, f.source, &d).and_then(|s| validate(f.name, &s)) {
                    Ok(()) => {}
                    Err(e) => failures.push(format!("{} {:?}: {e}", f.name, v)),
                }
            }
        }
        assert!(failures.is_empty(), "{} shader variants failed:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn broken_shader_is_a_typed_error() {
        let e = validate("broken", "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }").unwrap_err();
        assert!(matches!(e, Error::Shader { .. }), "{e}");
    }
}
