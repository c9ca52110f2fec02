//! Compute pipelines, compiled once per [`PipelineKey`] and cached.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::error::Result;

use super::shader;
use super::GpuContext;

/// Identifies one compiled pipeline: shader file, entry point, preprocessor defines and override constants.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PipelineKey {
    pub shader: &'static str,
    pub entry: &'static str,
    pub defines: BTreeMap<String, String>,
    pub constants: BTreeMap<&'static str, u32>,
}

impl PipelineKey {
    pub fn new(shader: &'static str, entry: &'static str) -> Self {
        Self { shader, entry, defines: BTreeMap::new(), constants: BTreeMap::new() }
    }
    pub fn define(mut self, name: &str) -> Self {
        self.defines.insert(name.to_string(), String::new());
        self
    }
    pub fn define_if(self, cond: bool, name: &str) -> Self {
        if cond {
            self.define(name)
        } else {
            self
        }
    }
    pub fn define_value(mut self, name: &str, value: impl ToString) -> Self {
        self.defines.insert(name.to_string(), value.to_string());
        self
    }
    pub fn constant(mut self, name: &'static str, value: u32) -> Self {
        self.constants.insert(name, value);
        self
    }
}

#[derive(Default)]
pub struct PipelineCache {
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    modules: Mutex<HashMap<(&'static str, BTreeMap<String, String>), wgpu::ShaderModule>>,
}

impl PipelineCache {
    pub fn len(&self) -> usize {
        self.pipelines.lock().map(|m| m.len()).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GpuContext {
    /// The pipeline for `key`, compiling it on first use.
    pub fn pipeline(&self, key: &PipelineKey) -> Result<Arc<wgpu::ComputePipeline>> {
        if let Some(p) = self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Ok(p.clone());
        }
        let module = {
            let mut modules = self.pipelines.modules.lock().unwrap_or_else(|p| p.into_inner());
            let mkey = (key.shader, key.defines.clone());
            match modules.get(&mkey) {
                Some(m) => m.clone(),
                None => {
                    let src = shader::preprocess(key.shader, shader::source(key.shader)?, &key.defines)?;
                    #[cfg(not(target_arch = "wasm32"))]
                    shader::validate(key.shader, &src)?;
                    let m = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(key.shader),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    });
                    modules.insert(mkey, m.clone());
                    m
                }
            }
        };
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|(k, v)| (*k, *v as f64)).collect();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key.entry),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        self.take_error()?;
        let p = Arc::new(pipeline);
        self.pipelines.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), p.clone());
        Ok(p)
    }
}
