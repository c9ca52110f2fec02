// The webvlm demo: image + question → caption → search query → retrieval (/v1/search, same origin) → answer
// with [n] citations. The model runs in a Web Worker (createWorkerEngine). Untrusted text (model output, search
// results, file names) only ever goes into the page through textContent / attributes, never as HTML.

import { createWorkerEngine, listCachedModels, clearCache } from '/pkg/index.js';

// Prompts of the Rust pipeline (src/pipeline/prompts.json), so both arms ask the same questions.
const P = {
  caption: 'Describe this image in one or two factual sentences: the main objects, their colors and shapes, and any text you can read.',
  rephraseVlm: 'Look at the image and the user\'s question. Write ONE self-contained web search query that would find the answer: name the things in the image explicitly instead of saying "this" or "it". Reply with the query only.\nImage description: {caption}\nQuestion: {question}',
  // text-only models never see the image; small ones echo long instructions, so this one is short
  rephraseText: 'Rewrite this question as a short web search query of a few keywords. Reply with the keywords only.\nQuestion: {question}',
  system: 'You answer questions about an image using the numbered sources. Cite the sources you use as [1], [2], ... right after the sentence they support. If the sources do not contain the answer, say so and answer from the image description alone.',
  generate: 'Sources:\n{sources}\n\nImage description: {caption}\nQuestion: {question}\nAnswer:',
  generateNoSources: 'No sources are available for this question; answer from the image description alone and say that the answer is not backed by sources.\n\nImage description: {caption}\nQuestion: {question}\nAnswer:',
};
const fill = (t, v) => t.replace(/\{(\w+)\}/g, (_, k) => v[k] ?? '');

const MODELS = [
  { key: 'smollm2', label: 'SmolLM2-135M-Instruct · Q4_1 · text only · offline (served by this server)',
    spec: { gguf: '/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf', id: 'SmolLM2-135M-Instruct-Q4_1' },
    hint: 'The offline default: 98 MB, served from /models/. Reads text only, so the caption step is skipped.' },
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
const mb = (n) => `${(n / 1048576).toFixed(1)} MB`;
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

function resetProgress() {
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
  bar.max = p.total || 1;
  bar.value = p.loaded;
  $(`pv-${p.phase}`).textContent = p.phase === 'compile' ? (p.loaded >= p.total ? 'done' : 'compiling…')
    : p.cached ? `cache · ${mb(p.total)}` : `${mb(p.loaded)} / ${mb(p.total || p.loaded)}`;
  setStatus(p.text);
}

async function loadModel() {
  if (state.loading) return;
  const m = MODELS.find((x) => x.key === $('model').value);
  state.loading = true;
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

async function generate(messages, { maxTokens, onText, signal }) {
  const stream = state.engine.chat.completions.create({ messages, stream: true, max_tokens: maxTokens, temperature: 0, signal });
  let text = '';
  let last = null;
  for await (const ch of stream) {
    const d = ch.choices[0].delta.content;
    if (d) {
      text += d;
      onText?.(text);
    }
    if (ch.webvlm) last = ch;
  }
  return { text: text.trim(), stats: last?.webvlm, usage: last?.usage, finish: last?.choices[0].finish_reason };
}

/** The model's query, or null when it is unusable (empty, an echo of the instructions, a whole paragraph). */
const cleanQuery = (t) => {
  const line = t.split('\n').map((s) => s.trim()).find(Boolean) || '';
  const q = line.replace(/^(search query|query|keywords)\s*:\s*/i, '').replace(/^["'“]|["'”.]$/g, '').trim();
  if (!q || q.split(/\s+/).length > 14 || /\b(search query|the user|question)\b/i.test(q)) return null;
  return q.slice(0, 200);
};

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
  renderAnswer('', [], true);
  chips([]);
  const engine = state.engine;
  const withImage = !!state.image && engine.isVlm;
  const t0 = performance.now();
  const signal = ctrl.signal;
  let caption = '';
  let docs = [];
  let final = null;
  try {
    // 1. caption
    if (!state.image) setStep('caption', 'skipped', note('No image given.'));
    else if (!engine.isVlm) {
      setStep('caption', 'skipped', note('The loaded model reads text only, so the image is not described. Pick a SmolVLM model to caption it.'));
    } else {
      setStep('caption', 'running');
      const c = await generate([{ role: 'user', content: [{ type: 'image', image: state.image }, { type: 'text', text: P.caption }] }],
        { maxTokens: 60, signal, onText: (t) => setStep('caption', 'running', t) });
      caption = c.text;
      setStep('caption', 'done', caption || note('(empty)'), c.stats?.totalMs);
    }
    if (signal.aborted) throw Object.assign(new Error('stopped'), { name: 'CancelledError' });
    const capText = caption || (state.image ? '(not available)' : '(no image)');

    // 2. rephrase
    setStep('rephrase', 'running');
    const rp = withImage ? fill(P.rephraseVlm, { caption: capText, question }) : fill(P.rephraseText, { caption: capText, question });
    const r = await generate([{ role: 'user', content: withImage ? [{ type: 'image', image: state.image }, { type: 'text', text: rp }] : rp }],
      { maxTokens: 24, signal, onText: (t) => setStep('rephrase', 'running', t) });
    const modelQuery = cleanQuery(r.text);
    const query = modelQuery || question;
    if (modelQuery) setStep('rephrase', 'done', query, r.stats?.totalMs);
    else setStep('rephrase', 'degraded', el('span', {}, document.createTextNode(query), el('br'), note(`The model's query was unusable (“${r.text.slice(0, 80)}…”); searching the question as asked.`)), r.stats?.totalMs);
    if (signal.aborted) throw Object.assign(new Error('stopped'), { name: 'CancelledError' });

    // 3. retrieve
    if ($('use-search').checked) {
      setStep('retrieve', 'running');
      const tr = performance.now();
      try {
        const res = await fetch(`/v1/search?q=${encodeURIComponent(query)}&k=3`, { signal });
        const body = await res.json();
        if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`);
        const all = body.results || [];
        // keep the documents that match nearly as well as the best one: weak BM25 matches only distract a small model
        docs = all.filter((d) => d.score >= 0.5 * (all[0]?.score ?? 0));
        const dropped = all.length - docs.length;
        const view = docs.length ? el('div', {}, renderDocs(docs)) : note(`No documents matched “${query}”.`);
        if (dropped) view.append(note(`${dropped} weaker match${dropped > 1 ? 'es' : ''} left out.`));
        setStep('retrieve', docs.length ? 'done' : 'degraded', view, performance.now() - tr);
      } catch (e) {
        if (signal.aborted) throw e;
        setStep('retrieve', 'degraded', note(`Search failed (${e.message}); answering without sources.`), performance.now() - tr);
      }
    } else setStep('retrieve', 'skipped', note('Search is off.'));

    // 4. answer
    setStep('answer', 'running');
    const sources = docs.map((d, i) => `[${i + 1}] ${d.title}: ${d.snippet.slice(0, 220)}`).join('\n');
    const prompt = docs.length ? fill(P.generate, { sources, caption: capText, question }) : fill(P.generateNoSources, { caption: capText, question });
    final = await generate([{ role: 'system', content: P.system }, { role: 'user', content: prompt }],
      { maxTokens: 96, signal, onText: (t) => renderAnswer(t, docs, true) });
    renderAnswer(final.text || '(no answer)', docs, false);
    const cited = [...new Set([...final.text.matchAll(/\[(\d+)\]/g)].map((m) => m[1]))].filter((n) => docs[n - 1]);
    setStep('answer', 'done', cited.length ? `cites ${cited.map((n) => `[${n}]`).join(' ')}` : note(docs.length ? 'no citations in the answer' : 'not backed by sources'), final.stats?.totalMs);
    if (final.finish === 'cancelled') setStep('answer', 'degraded', note('stopped'));
    document.body.dataset.run = 'done';
  } catch (e) {
    const cancelled = e?.name === 'CancelledError' || signal.aborted;
    for (const s of ['caption', 'rephrase', 'retrieve', 'answer']) if (step(s).dataset.state === 'running') setStep(s, cancelled ? 'degraded' : 'error', note(cancelled ? 'stopped' : e.message));
    if (!cancelled) showError(e);
    renderAnswer($('answer').textContent, docs, false);
    document.body.dataset.run = cancelled ? 'cancelled' : 'error';
    if (e?.name === 'DeviceLostError') {
      state.engine = null;
      setStatus(explain(e), 'error');
    }
  } finally {
    const st = final?.stats;
    chips([
      st && `${st.decodeTokensPerSecond.toFixed(1)} tok/s decode`,
      st && `${st.prefillTokensPerSecond.toFixed(0)} tok/s prefill`,
      final?.usage && `${final.usage.prompt_tokens} prompt + ${final.usage.completion_tokens} generated tokens`,
      st && `answer ${ms(st.totalMs)}`,
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
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    $('ask-form').requestSubmit();
  }
});
$('stop').addEventListener('click', () => state.running?.abort());
$('cache-clear').addEventListener('click', async () => {
  await clearCache();
  refreshCache();
});
showAdapter();
refreshCache();
if (new URLSearchParams(location.search).has('autoload')) loadModel();
