// Visual question answering in the browser with the offline VLM (DINOv2 + trained adapter + SmolLM2 Q4_1), loaded
// the way the demo loads it (Web Worker, Hugging Face directory layout from /models/offline-vlm/). Answers each
// item of items.json greedily and publishes the answers in window.__result for vlm.test.mjs to score.
import { createWorkerEngine } from '/pkg/index.js';

const log = (s) => (document.getElementById('log').textContent += `\n${s}`);

async function main() {
  const out = { answers: [], phases: [] };
  const items = await (await fetch('items.json')).json();
  const t0 = performance.now();
  const engine = await createWorkerEngine({ baseUrl: '/models/offline-vlm/', id: 'webvlm-offline-vlm' }, {
    maxContext: 256,
    onProgress: (p) => { if (!out.phases.includes(p.phase)) out.phases.push(p.phase); },
  });
  out.loadMs = performance.now() - t0;
  out.isVlm = engine.isVlm;
  out.adapter = engine.adapterInfo?.() ?? null;
  for (const it of items) {
    const t = performance.now();
    const r = await engine.chat.completions.create({
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: new URL(it.image, location.href).href } }, { type: 'text', text: it.question }] }],
      max_tokens: 4,
      temperature: 0,
    });
    const text = r.choices[0].message.content;
    out.answers.push({ question: it.question, text, ms: performance.now() - t });
    log(`${it.question} → ${text}`);
  }
  engine.dispose();
  return out;
}

main().then((r) => (window.__result = r), (e) => (window.__result = { error: `${e.name}: ${e.message}` }));
