// One runtime per page load (?rt=webvlm | wllama | tfjs-webgpu | tfjs-wasm, &threads=N, &reps=N, &max=N): loads
// SmolLM2-135M-Instruct, runs the prompts greedily, and leaves the measurements in window.__bench. Every runtime
// is timed the same way, from JS: load = the create/load call; time to first token (TTFT) from the request to the
// first streamed text; decode tok/s = (completion tokens − 1) ÷ (last chunk − first chunk). Token counts come from
// each runtime's own usage report.
const q = new URLSearchParams(location.search);
const rt = q.get('rt');
const threads = Number(q.get('threads') || 2);
const reps = Number(q.get('reps') || 3);
const maxTokens = Number(q.get('max') || 64);
const dtype = q.get('dtype'); // webvlm's GPU weight dtype; null: the engine's default for the file
const log = (s) => (document.getElementById('log').textContent += `${s}\n`);
const GGUF = '/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf';
// the same photo in three files (distinct bytes: no image-cache hits between runs)
const IMAGES = ['/fixtures/images/chelsea.png', '/fixtures/processor/chelsea_q90.jpg', '/fixtures/processor/chelsea_lossless.webp'];

// GPU memory of every runtime, counted the same way before any of them loads: GPUDevice.createBuffer and
// GPUBuffer.destroy wrapped. A buffer dropped without destroy() stays counted until the page ends (an upper bound).
const gpuMem = { liveBytes: 0, peakBytes: 0, buffers: 0 };
if (globalThis.GPUDevice && globalThis.GPUBuffer) {
  const create = GPUDevice.prototype.createBuffer;
  const destroy = GPUBuffer.prototype.destroy;
  const sizes = new WeakMap();
  GPUDevice.prototype.createBuffer = function (desc) {
    const b = create.call(this, desc);
    sizes.set(b, desc.size);
    gpuMem.liveBytes += desc.size;
    gpuMem.buffers += 1;
    gpuMem.peakBytes = Math.max(gpuMem.peakBytes, gpuMem.liveBytes);
    return b;
  };
  GPUBuffer.prototype.destroy = function () {
    const size = sizes.get(this);
    if (size !== undefined) {
      gpuMem.liveBytes -= size;
      sizes.delete(this);
    }
    return destroy.call(this);
  };
}
// JS + wasm memory of the page and its workers (needs cross-origin isolation; the driver makes Chromium measure
// at once instead of at its next GC)
async function pageMemory() {
  if (!performance.measureUserAgentSpecificMemory) return null;
  try {
    const m = await performance.measureUserAgentSpecificMemory();
    return m.bytes;
  } catch {
    return null;
  }
}

async function timedStream(start, iterate) {
  const t0 = performance.now();
  let first = null;
  let last = null;
  let text = '';
  const usage = await iterate(start, (piece) => {
    const t = performance.now();
    if (piece) {
      if (first === null) first = t;
      last = t;
      text += piece;
    }
  });
  const end = performance.now();
  return { text, ttftMs: (first ?? end) - t0, totalMs: end - t0, decodeMs: (last ?? end) - (first ?? end), usage };
}

// the same rendered prompt everywhere: the system prompt SmolLM2's template would insert, given explicitly
const chat = (p) => [{ role: 'system', content: p.system }, { role: 'user', content: p.prompt }];

// webvlm's npm package: load timing, adapter description and its own memory report
async function loadWebvlm(model) {
  const { createEngine } = await import('/pkg/index.js');
  const t0 = performance.now();
  const engine = await createEngine(model, { cache: false, maxContext: 512, ...(dtype ? { dtype } : {}) });
  const loadMs = performance.now() - t0;
  const info = engine.adapterInfo();
  return {
    engine,
    loadMs,
    device: `WebGPU (shader-f16 ${info.shaderF16}, subgroups ${info.subgroups}, CPU adapter ${info.cpuAdapter})`,
    memory: () => ({ wasmHeapBytes: engine.loadReport().wasmMemoryAfter, gpuWeightBytes: engine.loadReport().weightBytes }),
  };
}

// transformers.js, offline: local models under /models/, onnxruntime-web's wasm from node_modules, `threads` threads
async function loadTransformers() {
  const tf = await import('/node_modules/@huggingface/transformers/dist/transformers.js');
  tf.env.allowRemoteModels = false;
  tf.env.allowLocalModels = true;
  tf.env.localModelPath = '/models/';
  tf.env.backends.onnx.wasm.wasmPaths = '/node_modules/onnxruntime-web/dist/';
  tf.env.backends.onnx.wasm.numThreads = threads;
  return tf;
}

// transformers' greedy reference for one image file (reference.json of scripts/export_smolvlm_onnx.sh: "images" by
// URL; the PNG's also at the top level)
const referenceFor = (ref, url) => ref.images?.[url] ?? (url === ref.image ? ref : null);

const runtimes = {
  async webvlm() {
    const { engine, ...common } = await loadWebvlm(GGUF);
    return {
      ...common,
      engine,
      async run(p) {
        return timedStream(null, async (_, on) => {
          let usage = null;
          const stream = await engine.chat.completions.create({ messages: chat(p), stream: true, max_tokens: maxTokens, temperature: 0 });
          for await (const c of stream) {
            on(c.choices[0]?.delta?.content || '');
            if (c.usage) usage = c.usage;
          }
          return usage;
        });
      },
    };
  },
  // the image path: a SmolVLM-256M-shaped checkpoint with random weights (scripts/make_smolvlm256m_random.py),
  // one 512 x 512 tile per image; each run a different file, so none comes from the image cache
  async 'webvlm-vlm'() {
    const { engine, ...common } = await loadWebvlm('/models/smolvlm-256m-random/');
    // transformers' greedy ids per image file (scripts/export_smolvlm_onnx.sh writes them), decoded with the
    // checkpoint's tokenizer (through transformers.js) to compare with webvlm's text; null without the export
    let reference = null;
    try {
      const ref = await (await fetch('/models/smolvlm-onnx/reference.json')).json();
      const tf = await loadTransformers();
      const tok = await tf.AutoTokenizer.from_pretrained('smolvlm-onnx');
      reference = (url, n) => {
        const r = referenceFor(ref, url);
        return r ? tok.decode(r.greedy_ids.slice(0, n), { skip_special_tokens: true }) : null;
      };
    } catch (e) {
      log(`webvlm-vlm: no transformers reference (${e})`);
    }
    return {
      ...common,
      engine,
      async image(url) {
        const t = performance.now();
        const r = await engine.chat.completions.create({
          messages: [{ role: 'user', content: [{ type: 'image', image: url }, { type: 'text', text: 'Describe this image.' }] }],
          max_tokens: 4, temperature: 0 });
        const total = performance.now() - t;
        const text = r.choices[0].message.content;
        const want = reference ? reference(url, r.usage.completion_tokens) : null;
        return { total_ms: total, image_encode_ms: r.webvlm.imageEncodeMs, prefill_ms: r.webvlm.prefillMs,
          // request -> first token: everything but the decode steps after it
          ttft_ms: total - r.webvlm.decodeMs, decode_tok_s: r.webvlm.decodeTokensPerSecond,
          prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens, images_from_cache: r.webvlm.imagesFromCache,
          text, reference_text: want, same_greedy_text_as_transformers: want === null ? null : text.trim() === want.trim() };
      },
    };
  },
  async wllama() {
    const { Wllama } = await import('/node_modules/@wllama/wllama/esm/index.js');
    const w = new Wllama({ default: '/node_modules/@wllama/wllama/esm/wasm/wllama.wasm' }, { allowOffline: true, logger: { debug() {}, log() {}, warn() {}, error: console.error } });
    const t0 = performance.now();
    await w.loadModelFromUrl(new URL(GGUF, location.href).href, { n_ctx: 512, n_threads: threads, n_gpu_layers: 0, useCache: false });
    const loadMs = performance.now() - t0;
    return {
      loadMs,
      device: `wasm CPU, ${threads} threads${crossOriginIsolated ? '' : ' (not cross-origin isolated: 1 thread)'}`,
      memory: () => ({}),
      async run(p) {
        return timedStream(null, async (_, on) => {
          let usage = null;
          let timings = null;
          await w.createChatCompletion({ messages: chat(p), max_tokens: maxTokens, temperature: 0, cache_prompt: false, stream: true,
            onData: (c) => {
              on(c.choices?.[0]?.delta?.content || '');
              if (c.usage) usage = c.usage;
              if (c.timings) timings = c.timings;
            } });
          return usage ?? (timings ? { prompt_tokens: timings.prompt_n, completion_tokens: timings.predicted_n } : null);
        });
      },
    };
  },
};
for (const device of ['webgpu', 'wasm']) {
  runtimes[`tfjs-${device}`] = async () => {
    const tf = await loadTransformers();
    const t0 = performance.now();
    const tok = await tf.AutoTokenizer.from_pretrained('smollm2-onnx');
    const model = await tf.AutoModelForCausalLM.from_pretrained('smollm2-onnx', { device, dtype: 'fp32' });
    const loadMs = performance.now() - t0;
    return {
      loadMs,
      device: device === 'webgpu' ? 'WebGPU (ONNX Runtime Web)' : `wasm CPU (ONNX Runtime Web), ${threads} threads`,
      memory: () => ({}),
      async run(p) {
        return timedStream(null, async (_, on) => {
          const inputs = tok.apply_chat_template(chat(p), { add_generation_prompt: true, return_dict: true });
          const streamer = new tf.TextStreamer(tok, { skip_prompt: true, skip_special_tokens: true, callback_function: (t) => on(t) });
          let n = 0;
          const counter = { put: (ids) => { n += ids[0].length; }, end() {} };
          const out = await model.generate({ ...inputs, max_new_tokens: maxTokens, do_sample: false, streamer: { put: (x) => { streamer.put(x); counter.put(x); }, end: () => streamer.end() } });
          const promptTokens = inputs.input_ids.dims.at(-1);
          return { prompt_tokens: promptTokens, completion_tokens: out.dims.at(-1) - promptTokens };
        });
      },
    };
  };
}

// transformers.js on the image path: the same checkpoint as webvlm-vlm (models/smolvlm-256m-random) as three f32
// ONNX graphs (scripts/export_smolvlm_onnx.sh -> models/smolvlm-onnx: vision_encoder, embed_tokens,
// decoder_model_merged), the same images, prompt and number of tokens. Each ONNX session's run() is wrapped, so
// image encode = the vision_encoder run and prefill = the first decoder run (image + text tokens), as webvlm reports
// them; TTFT = request -> first generated token (image fetch/decode, preprocessing, encode, prefill);
// decode tok/s = (tokens - 1) / (last - first token). The greedy ids are checked against transformers
// (reference.json, written by the export script).
const VLM_TOKENS = 4; // as webvlm-vlm
const VLM_DIR = '/models/smolvlm-onnx/';
window.__partial = {}; // what run.mjs reads back when a run times out (a lower bound instead of nothing)
for (const device of ['wasm', 'webgpu']) {
  runtimes[`tfjs-vlm-${device}`] = async () => {
    const tf = await loadTransformers();
    window.__partial = { phase: 'load', phase_start_ms: performance.now() };
    const t0 = performance.now();
    const processor = await tf.AutoProcessor.from_pretrained('smolvlm-onnx');
    const model = await tf.Idefics3ForConditionalGeneration.from_pretrained('smolvlm-onnx', { device, dtype: 'fp32' });
    const loadMs = performance.now() - t0;
    window.__partial.load_ms = loadMs;
    let calls = [];
    for (const [name, session] of Object.entries(model.sessions)) {
      const run = session.run.bind(session);
      session.run = async (...args) => {
        const t = performance.now();
        Object.assign(window.__partial, { phase: name, phase_start_ms: t });
        const out = await run(...args);
        calls.push({ name, ms: performance.now() - t });
        return out;
      };
    }
    const ref = await (await fetch(`${VLM_DIR}reference.json`)).json();
    const messages = [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: 'Describe this image.' }] }];
    const text = processor.apply_chat_template(messages, { add_generation_prompt: true });
    // greedy generation with per-token times; the first put() of a streamer is the prompt
    async function generate(inputs) {
      const times = [];
      let prompt = true;
      const streamer = { put() { if (prompt) prompt = false; else times.push(performance.now()); }, end() {} };
      const out = await model.generate({ ...inputs, max_new_tokens: VLM_TOKENS, do_sample: false, streamer });
      const n = inputs.input_ids.dims.at(-1);
      const ids = Array.from(out.tolist()[0].slice(n), Number);
      return { ids, times };
    }
    // the python reference of each image file (reference.json "images"; the PNG's also at the top level)
    const sameIds = (ids, r = ref) => ids.every((x, i) => x === r.greedy_ids[i]);
    const pixels = async (r) => new Float32Array(await (await fetch(VLM_DIR + r.pixel_values_file)).arrayBuffer());
    return {
      loadMs,
      device: device === 'webgpu' ? 'WebGPU (ONNX Runtime Web)' : `wasm CPU (ONNX Runtime Web), ${threads} threads`,
      memory: () => ({}),
      async image(url) {
        calls = [];
        const t = performance.now();
        const image = await tf.RawImage.read(url);
        const inputs = await processor(text, image);
        const { ids, times } = await generate(inputs);
        const total = performance.now() - t;
        const enc = calls.filter((c) => c.name === 'vision_encoder');
        const dec = calls.filter((c) => c.name === 'decoder_model_merged');
        const promptIds = Array.from(inputs.input_ids.data, Number);
        const r = referenceFor(ref, url);
        let pixelDiff = null;
        if (r) {
          const py = await pixels(r);
          pixelDiff = 0;
          inputs.pixel_values.data.forEach((v, i) => { pixelDiff = Math.max(pixelDiff, Math.abs(v - py[i])); });
        }
        return {
          total_ms: total, image_encode_ms: enc.reduce((a, c) => a + c.ms, 0), prefill_ms: dec[0]?.ms ?? NaN,
          ttft_ms: times[0] - t, decode_tok_s: times.length > 1 ? (times.length - 1) / ((times.at(-1) - times[0]) / 1000) : null,
          decode_step_ms: dec.slice(1).map((c) => c.ms), embed_tokens_ms: calls.filter((c) => c.name === 'embed_tokens').map((c) => c.ms),
          prompt_tokens: promptIds.length, completion_tokens: ids.length, greedy_ids: ids,
          reference_greedy_ids: r ? r.greedy_ids.slice(0, ids.length) : null,
          same_prompt_ids_as_transformers: r ? promptIds.length === r.input_ids.length && promptIds.every((x, i) => x === r.input_ids[i]) : null,
          same_greedy_ids_as_transformers: r ? sameIds(ids, r) : null,
          // the browser's resize (canvas drawImage) is not PIL's Lanczos: how far its pixels are from python's
          pixel_max_abs_diff_vs_python: pixelDiff,
        };
      },
      // the graphs on exactly the python processor's input ids and pixel values (no resize difference): ids must
      // equal transformers'. Not timed. Skipped (check=0) where an image encode takes minutes.
      async check() {
        if (q.get('check') === '0') return null;
        const py = await pixels(ref);
        const n = ref.input_ids.length;
        const inputs = {
          input_ids: new tf.Tensor('int64', BigInt64Array.from(ref.input_ids, BigInt), [1, n]),
          attention_mask: new tf.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
          pixel_values: new tf.Tensor('float32', py, ref.pixel_values_shape),
          pixel_attention_mask: new tf.Tensor('bool', new Uint8Array(py.length / 3).fill(1), [1, 1, ...ref.pixel_values_shape.slice(-2)]),
        };
        const { ids } = await generate(inputs);
        return { input: 'python processor input_ids + pixel_values (reference.json)', greedy_ids: ids, reference_greedy_ids: ref.greedy_ids.slice(0, ids.length),
          same_greedy_ids_as_transformers: sameIds(ids) };
      },
    };
  };
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : null;
};

async function adapterName() {
  const a = await navigator.gpu?.requestAdapter();
  const i = a?.info || {};
  return [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || (a ? 'unnamed WebGPU adapter' : 'no WebGPU adapter');
}

try {
  const adapter = await adapterName();
  const prompts = (await (await fetch('/prompts.json')).json()).slice(0, Number(q.get('n') || 1000));
  log(`${rt}: loading`);
  const r = await runtimes[rt]();
  log(`${rt}: loaded in ${r.loadMs.toFixed(0)} ms on ${r.device}`);
  const memLoaded = { pageBytes: await pageMemory(), gpuLiveBytes: gpuMem.liveBytes, gpuPeakBytes: gpuMem.peakBytes };
  const results = [];
  const imageResults = [];
  for (const url of r.image ? IMAGES.slice(0, reps) : []) {
    const x = await r.image(url);
    imageResults.push({ image: url, ...x });
    log(`${rt}: ${url}: encode ${x.image_encode_ms.toFixed(0)} ms, prefill of ${x.prompt_tokens} tokens ${x.prefill_ms.toFixed(0)} ms${x.greedy_ids ? `, ids ${x.greedy_ids}` : ''}`);
  }
  // &profile=1: one more image run with GPU timestamps per kernel (slower: one pass per dispatch; not timed)
  let profile = null;
  if (q.get('profile') === '1' && r.image && r.engine?.startProfiling) {
    await r.engine.startProfiling();
    const x = await r.image(IMAGES[reps % IMAGES.length]);
    // only 3 image files: with --reps 3 the profiled one comes from the image cache (no encode in the profile)
    profile = { ...(await r.engine.stopProfiling()), image_encode_ms_profiled: x.image_encode_ms, images_from_cache: x.images_from_cache };
    if (x.images_from_cache) log(`${rt}: profile: the image came from the cache (use --reps 2 or fewer)`);
  } else if (q.get('profile') === '1' && r.run && r.engine?.startProfiling && prompts.length) {
    // the text path: one more run of the first prompt (prefill + decode), profiled
    await r.engine.startProfiling();
    const x = await r.run(prompts[0]);
    profile = { ...(await r.engine.stopProfiling()), prompt: prompts[0].prompt, prompt_tokens: x.usage?.prompt_tokens ?? null,
      completion_tokens: x.usage?.completion_tokens ?? null, ttft_ms_profiled: x.ttftMs, decode_ms_profiled: x.decodeMs };
  }
  if (profile) {
    log(`${rt}: profile: ${profile.kernels.slice(0, 6).map((k) => `${k.kernel} ${k.gpu_ms.toFixed(0)} ms`).join('; ')}`);
  }
  const checks = r.check ? await r.check() : null;
  if (checks) log(`${rt}: check on the python inputs: ids ${checks.greedy_ids}, same as transformers: ${checks.same_greedy_ids_as_transformers}`);
  for (const p of r.run ? prompts : []) {
    const runs = [];
    for (let i = 0; i < reps; i++) {
      const x = await r.run(p);
      runs.push(x);
      log(`${rt}: ${JSON.stringify(p.prompt)} #${i}: ${x.usage?.completion_tokens} tokens, ttft ${x.ttftMs.toFixed(0)} ms, ${JSON.stringify(x.text.slice(0, 60))}`);
    }
    const tok = (x) => x.usage?.completion_tokens ?? null;
    results.push({
      prompt: p.prompt,
      text: runs[0].text,
      prompt_tokens: runs[0].usage?.prompt_tokens ?? null,
      completion_tokens: tok(runs[0]),
      ttft_ms: median(runs.map((x) => x.ttftMs)),
      prefill_tok_s: median(runs.map((x) => (x.usage?.prompt_tokens ?? NaN) / (x.ttftMs / 1000))),
      decode_tok_s: median(runs.map((x) => (tok(x) > 1 && x.decodeMs > 0 ? (tok(x) - 1) / (x.decodeMs / 1000) : NaN))),
      runs: runs.map((x) => ({ ttft_ms: x.ttftMs, decode_ms: x.decodeMs, total_ms: x.totalMs, completion_tokens: tok(x) })),
    });
  }
  const memory = {
    ...r.memory(),
    after_load: memLoaded,
    after_runs: { pageBytes: await pageMemory(), gpuLiveBytes: gpuMem.liveBytes },
    gpuPeakBytes: gpuMem.peakBytes,
    gpuBuffersCreated: gpuMem.buffers,
    note: 'pageBytes: performance.measureUserAgentSpecificMemory() (JS + wasm of the page and its workers); gpu*: GPUDevice.createBuffer sizes minus destroyed buffers',
  };
  window.__bench = { runtime: rt, device: r.device, webgpu_adapter: adapter, threads, reps, max_tokens: maxTokens, load_ms: r.loadMs, memory,
    crossOriginIsolated, jsHeapBytes: performance.memory?.usedJSHeapSize ?? null, results, image_results: imageResults, ...(checks ? { checks } : {}),
    ...(profile ? { gpu_profile: profile } : {}) };
} catch (e) {
  log(`${rt}: ${e.stack || e}`);
  window.__bench = { runtime: rt, error: String(e.stack || e) };
}
