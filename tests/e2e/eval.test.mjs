// `webvlm eval` end to end: the real webvlm-server as the retrieval endpoint (search/v1 over data/corpus.jsonl), a
// local OpenAI-compatible test judge (a Node HTTP server here that streams SSE and always answers "B"), and a tiny
// random Idefics3 checkpoint (tests/fixtures) as the VLM: both arms run on 3 items, the judge sees the criteria
// and both answers in a per-item A/B order, and the run writes records.jsonl, summary.json and report.html. The
// report is opened in headless Chromium, checked and screenshotted (target/e2e/eval-report.png).
import { execFile } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT, startServer, launchBrowser, check, failed, assert } from './lib.mjs';

const WORK = path.join(ROOT, 'target/e2e/eval');
const OUT = path.join(WORK, 'out');
rmSync(WORK, { recursive: true, force: true });
mkdirSync(path.join(WORK, 'model'), { recursive: true });
mkdirSync(path.join(WORK, 'images'), { recursive: true });
const eng = path.join(ROOT, 'tests/fixtures/models/idefics3_engine');
for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'preprocessor_config.json']) cpSync(path.join(eng, f), path.join(WORK, 'model', f));
cpSync(path.join(ROOT, 'tests/fixtures/models/idefics3/model.safetensors'), path.join(WORK, 'model/model.safetensors'));
cpSync(path.join(ROOT, 'tests/fixtures/images/chelsea.png'), path.join(WORK, 'images/chelsea.png'));
const items = [
  { id: 'cat-1', image: 'images/chelsea.png', question: 'What animal is this?', answers: ['cat', 'domestic cat'], gold_doc_ids: ['domestic-cat'] },
  { id: 'cat-2', image: 'images/chelsea.png', question: 'What do <b>these</b> animals eat?', answers: ['meat'], gold_doc_ids: ['domestic-cat'], tags: ['cat', 'animal'] },
  { id: 'cat-3', image: 'images/chelsea.png', question: 'Where does this animal come from?', answers: ['Near East'], gold_doc_ids: ['domestic-cat'], ocr_text: 'CHELSEA' },
];
writeFileSync(path.join(WORK, 'items.jsonl'), items.map((x) => JSON.stringify(x)).join('\n') + '\n');

// the test judge: OpenAI-compatible chat completions, SSE, verdict "B" every time
const judged = [];
const judge = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => (body += d));
  req.on('end', () => {
    if (req.method !== 'POST' || !req.url.endsWith('/v1/chat/completions')) { res.writeHead(404).end(); return; }
    judged.push(JSON.parse(body));
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(': keep-alive\r\n\r\n');
    res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'Verdict: ' } }] })}\r\n\r\n`);
    res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'B' }, finish_reason: 'stop' }] })}\r\n\r\n`);
    res.end('data: [DONE]\r\n\r\n');
  });
});
await new Promise((r) => judge.listen(0, '127.0.0.1', r));
const judgeUrl = `http://127.0.0.1:${judge.address().port}`;

const server = await startServer();
const bin = process.env.WEBVLM_BIN || path.join(ROOT, 'target/debug/webvlm');
try {
  await check('webvlm eval: both arms, judge, records + summary + report', async () => {
    const args = ['eval', '--items', path.join(WORK, 'items.jsonl'), '--model', path.join(WORK, 'model'), '--search', server.url,
      '--judge', judgeUrl, '--seed', '7', '--k', '3', '--max-tokens', '8', '--context', '1024', '--out', OUT];
    const { stdout, stderr } = await new Promise((resolve, reject) => execFile(bin, args, { maxBuffer: 1 << 24 }, (e, stdout, stderr) => (e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve({ stdout, stderr }))));
    process.stdout.write(stderr.split('\n').filter((l) => l.startsWith('[') || l.startsWith('wrote')).join('\n') + '\n');
    const records = readFileSync(path.join(OUT, 'records.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert(records.length === 3, `${records.length} records`);
    for (const [i, r] of records.entries()) {
      assert(r.id === items[i].id && r.question === items[i].question, `record ${i} is item ${i}`);
      assert(JSON.stringify(r.gold_doc_ids) === JSON.stringify(items[i].gold_doc_ids), 'gold ids copied');
      for (const arm of ['legacy', 'vlm']) {
        assert(typeof r[arm].query === 'string' && r[arm].query.length > 0, `${arm} query`);
        assert(Array.isArray(r[arm].retrieved_ids) && r[arm].retrieved_ids.length <= 3, `${arm} retrieved ≤ k ids`);
        assert(typeof r[arm].answer === 'string' && r[arm].ms > 0, `${arm} answer and timing`);
      }
      assert(r.judge && r.judge.verdict === 'B', `judge verdict parsed from "Verdict: B": ${JSON.stringify(r.judge)}`);
    }
    // the judge saw the criteria and each item's two answers, A/B order per the record's `swapped`
    assert(judged.length === 3, `${judged.length} judge calls`);
    for (const [i, body] of judged.entries()) {
      const [sys, user] = body.messages;
      assert(sys.role === 'system' && /hallucinations/.test(sys.content) && /completeness/.test(sys.content), 'criteria in the judge prompt');
      const r = records[i];
      const [a, b] = r.judge.swapped ? [r.legacy.answer, r.vlm.answer] : [r.vlm.answer, r.legacy.answer];
      assert(user.content.includes(`Answer A:\n${a}`) && user.content.includes(`Answer B:\n${b}`), `A/B order of item ${r.id}`);
      assert(body.temperature === 0 || body.temperature === undefined, 'judge at temperature 0');
    }
    const summary = JSON.parse(readFileSync(path.join(OUT, 'summary.json'), 'utf8'));
    assert(summary.n === 3 && summary.k === 3, 'summary n, k');
    const swapped = records.filter((r) => r.judge.swapped).length;
    // "B" = legacy when not swapped, VLM when swapped
    assert(summary.sbs.judged === 3 && summary.sbs.invalid === 0, `sbs counts ${JSON.stringify(summary.sbs)}`);
    assert(summary.sbs.vlm_wins === swapped && summary.sbs.legacy_wins === 3 - swapped && summary.sbs.ties === 0, `B mapped through the A/B order: ${JSON.stringify(summary.sbs)}`);
    assert(JSON.parse(stdout).n === 3, 'summary on stdout');
    for (const arm of ['legacy', 'vlm']) assert(summary[arm].n === 3 && summary[arm].recall_at_k !== null, `${arm} summary`);
  });

  await check('report.html opens in Chromium: headline, charts, items, nothing unescaped; screenshot', async () => {
    const file = path.join(OUT, 'report.html');
    assert(existsSync(file), 'report written');
    const html = readFileSync(file, 'utf8');
    assert(!/<script/i.test(html), 'no script in the report');
    assert(html.includes('What do &lt;b&gt;these&lt;/b&gt; animals eat?'), 'question text escaped');
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage({ viewport: { width: 1160, height: 900 } });
      await page.goto(pathToFileURL(file).href);
      const h1 = await page.textContent('h1');
      assert(/side-by-side/.test(h1), `title: ${h1}`);
      assert(await page.locator('svg').count() >= 2, 'metric and judge charts');
      assert(await page.locator('table tr').count() === 4, 'header + 3 item rows');
      assert(await page.locator('table img').count() === 3, 'thumbnails inline');
      assert(await page.locator('b', { hasText: 'these' }).count() === 0, 'question rendered as text, not markup');
      await page.screenshot({ path: path.join(ROOT, 'target/e2e/eval-report.png'), fullPage: true });
    } finally {
      await browser.close();
    }
  });
} finally {
  server.stop();
  judge.close();
}
if (failed()) process.exit(1);
