//! The native CLI.
//!
//! `webvlm run --model <dir|file.gguf> [--mmproj f.gguf] [--image x.jpg] --prompt "..." [--dtype q4_0]`
//! streams the answer to stdout and prints a summary line (load time, image-encode ms, prefill and decode tok/s)
//! to stderr. `webvlm info` prints the GPU adapter and its limits.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use webvlm::engine::{ChatRequest, Engine};
use webvlm::generation::{CancelToken, GenerationConfig};
use webvlm::gpu::{GpuContext, GpuOptions};
use webvlm::loader::FileSource;
use webvlm::models::{parse_dtype, DirFiles};
use webvlm::nn::LoadOptions;

#[derive(Parser)]
#[command(name = "webvlm", version, about = "Vision-language models on WebGPU / wgpu")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Answer a prompt (optionally about an image), streaming tokens to stdout.
    Run {
        /// A Hugging Face repo directory (config.json + safetensors) or a GGUF file.
        #[arg(long)]
        model: PathBuf,
        /// The GGUF vision projector for a GGUF text model.
        #[arg(long)]
        mmproj: Option<PathBuf>,
        #[arg(long)]
        image: Vec<PathBuf>,
        #[arg(long)]
        prompt: String,
        /// Weight dtype on the GPU: auto (as stored), f32, f16, q8_0, q4_0.
        #[arg(long, default_value = "auto")]
        dtype: String,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: u32,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 1.0)]
        repetition_penalty: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Context length to allocate the KV cache for.
        #[arg(long, default_value_t = 2048)]
        context: usize,
        /// An optional system message.
        #[arg(long)]
        system: Option<String>,
    },
    /// Print the GPU adapter, its features and limits as JSON.
    Info,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Info => {
            let ctx = GpuContext::new_blocking(GpuOptions::default())?;
            println!("{}", serde_json::to_string_pretty(&ctx.caps)?);
            Ok(())
        }
        Cmd::Run { model, mmproj, image, prompt, dtype, max_tokens, temperature, top_k, top_p, repetition_penalty, seed, context, system } => {
            let opts = LoadOptions { dtype: parse_dtype(&dtype)? };
            let t0 = Instant::now();
            let ctx = GpuContext::new_blocking(GpuOptions::default())?;
            eprintln!("GPU: {} ({}), loading {} …", ctx.caps.adapter_name, ctx.caps.backend, model.display());
            let engine = if model.is_dir() {
                if mmproj.is_some() {
                    bail!("--mmproj is for GGUF models; a repo directory holds its vision tower");
                }
                Engine::load_hf(ctx.clone(), &DirFiles(model.clone()), opts, context)
            } else {
                let text = Box::new(FileSource::open(&model).with_context(|| format!("opening {}", model.display()))?);
                let mm = match &mmproj {
                    Some(p) => Some(Box::new(FileSource::open(p).with_context(|| format!("opening {}", p.display()))?) as _),
                    None => None,
                };
                Engine::load_gguf(ctx.clone(), text, mm, opts, context)
            }
            .with_context(|| format!("loading {}", model.display()))?;
            let load_s = t0.elapsed().as_secs_f64();
            let stats = ctx.pool_stats();
            eprintln!("loaded in {load_s:.2} s ({:.1} MiB on the GPU)", stats.live_bytes as f64 / (1 << 20) as f64);
            let images = image
                .iter()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .collect::<Result<Vec<_>>>()?;
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(webvlm::processor::chat::Message::text("system", &s));
            }
            messages.push(Engine::user_message(&prompt, images.len()));
            let req = ChatRequest {
                messages,
                images,
                generation: GenerationConfig { max_new_tokens: max_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop_tokens: vec![] },
            };
            let cancel = CancelToken::default();
            {
                let c = cancel.clone();
                let _ = ctrlc_cancel(c);
            }
            let mut out = std::io::stdout();
            let resp = pollster::block_on(engine.chat(&req, &cancel, |s| {
                let _ = out.write_all(s.as_bytes());
                let _ = out.flush();
            }))?;
            println!();
            let g = &resp.stats.generation;
            eprintln!(
                "load {load_s:.2} s | image encode {:.0} ms | prefill {} tok, {:.1} tok/s | decode {} tok, {:.1} tok/s | stop: {:?}",
                resp.stats.image_encode_ms,
                g.prompt_tokens,
                g.prefill_tok_s(),
                g.generated_tokens,
                g.decode_tok_s(),
                resp.stop
            );
            Ok(())
        }
    }
}

/// Ctrl-C cancels generation (the answer so far is kept) instead of killing the process mid-line.
fn ctrlc_cancel(c: CancelToken) -> Result<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                let _ = tokio::signal::ctrl_c().await;
                c.cancel();
            });
        }
    });
    Ok(())
}
