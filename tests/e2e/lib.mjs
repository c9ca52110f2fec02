// Shared helpers of the e2e tests: start the real webvlm-server, launch Debian's Chromium with WebGPU.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Starts target/debug/webvlm-server on a free port; resolves to {url, stop}. */
export function startServer({ www = path.join(ROOT, 'www'), connectSrc = [] } = {}) {
  const bin = process.env.WEBVLM_SERVER || path.join(ROOT, 'target/debug/webvlm-server');
  const args = ['--corpus', path.join(ROOT, 'data/corpus.jsonl'), '--port', '0', '--www', www,
    '--pkg', path.join(ROOT, 'pkg'), '--models', path.join(ROOT, 'models'), ...connectSrc.flatMap((c) => ['--connect-src', c])];
  const proc = spawn(bin, args, { stdio: ['ignore', 'inherit', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    const timer = setTimeout(() => reject(new Error(`webvlm-server did not start: ${err}`)), 60000);
    proc.stderr.on('data', (d) => {
      err += d;
      process.stderr.write(d);
      // only a whole line: stderr may arrive split inside the address
      const m = /listening on (http:\/\/[\d.:]+)\s/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], stop: () => proc.kill('SIGTERM') });
      }
    });
    proc.on('exit', (code) => reject(new Error(`webvlm-server exited with ${code}: ${err}`)));
  });
}

/**
 * A stand-in for a remote OpenAI-compatible generator (`POST …/v1/chat/completions`, SSE), with CORS. The first
 * path segment picks the behaviour: `ok` streams `answer` (CRLF line ends, a keep-alive comment, one event split
 * across two writes), `fail` answers 500 with an OpenAI error body, `stall` sends headers and then nothing.
 * Under `nocors/` it serves files without CORS headers (a model host that blocks other origins).
 * Under `garbage/` and `slow/` it is also a broken search/v1 server (`…/v1/search`: HTML; slow: after 3 s).
 * Resolves to {url, requests, close}; `requests` records [mode, headers, body] of each chat POST.
 */
export async function startTestGenerator({ answer = 'From the sources [1].' } = {}) {
  const requests = [];
  const cors = { 'access-control-allow-origin': '*', 'access-control-allow-headers': 'content-type, authorization, accept' };
  const server = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') { res.writeHead(204, { ...cors, 'access-control-allow-methods': 'POST' }).end(); return; }
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', async () => {
      const mode = req.url.split('/')[1];
      if (mode === 'nocors') {
        // a file server that does not allow other origins: the browser blocks the response
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      if (req.url.includes('/v1/search')) {
        // a broken search/v1 endpoint: `garbage` answers 200 with HTML, `slow` answers after 3 s
        if (mode === 'slow') await new Promise((r) => setTimeout(r, 3000));
        if (!res.destroyed) res.writeHead(200, { ...cors, 'content-type': 'text/html' }).end('<html>upstream error</html>');
        return;
      }
      if (req.method !== 'POST' || !req.url.endsWith('/v1/chat/completions')) { res.writeHead(404, cors).end(); return; }
      requests.push([mode, req.headers, JSON.parse(body)]);
      if (mode === 'fail') {
        res.writeHead(500, { ...cors, 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'model overloaded', type: 'server_error' } }));
      } else if (mode === 'stall') {
        res.writeHead(200, { ...cors, 'content-type': 'text/event-stream' });
        res.write(': keep-alive\r\n\r\n');
      } else {
        res.writeHead(200, { ...cors, 'content-type': 'text/event-stream' });
        res.write(': keep-alive\r\n\r\n');
        const words = answer.split(/(?<= )/);
        for (const [i, w] of words.entries()) {
          const ev = `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: w }, finish_reason: i === words.length - 1 ? 'stop' : null }] })}\r\n\r\n`;
          if (i === 0) {
            res.write(ev.slice(0, 9));
            await new Promise((r) => setTimeout(r, 30));
            res.write(ev.slice(9));
          } else res.write(ev);
        }
        res.end('data: [DONE]\r\n\r\n');
      }
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, requests, close: () => { server.closeAllConnections(); server.close(); } };
}

/** Chromium with the flags of webdriver.json (headless, SwiftShader WebGPU). */
export async function launchBrowser() {
  const wd = JSON.parse(readFileSync(path.join(ROOT, 'webdriver.json'), 'utf8'));
  const args = wd['goog:chromeOptions'].args.filter((a) => !a.startsWith('--headless'));
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args });
}

/** Collects console errors, page errors and CSP violations of a page. */
export function watchPage(page, log = []) {
  page.on('console', (m) => {
    // the location names the resource for "Failed to load resource" messages
    const where = m.location()?.url;
    const t = `[console.${m.type()}] ${m.text()}${where ? ` (${where})` : ''}`;
    if (process.env.E2E_VERBOSE || m.type() === 'error') console.log(t);
    if (m.type() === 'error') log.push(t);
  });
  page.on('pageerror', (e) => {
    console.log(`[pageerror] ${e.message}`);
    log.push(`pageerror: ${e.message}`);
  });
  return log;
}

let failures = 0;
export async function check(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s): ${e.stack || e}`);
  }
}
export const failed = () => failures;

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}
