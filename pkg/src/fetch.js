// Downloads with progress, and the weight cache (Cache API) with integrity checks.
//
// Cached entries are stored under their URL in the cache `webvlm-weights-v1`, with the SHA-256 of the bytes
// (computed with SubtleCrypto when stored) in `x-webvlm-sha256`. A read recomputes the hash and drops the entry if
// it no longer matches (or if the caller's expected `sha256` differs), so a corrupted cache is re-downloaded.

import { CacheError, NetworkError, CancelledError } from './errors.js';

export const CACHE_NAME = 'webvlm-weights-v1';

function cacheApi() {
  return typeof caches !== 'undefined' ? caches : null;
}

export async function sha256Hex(bytes) {
  const d = await crypto.subtle.digest('SHA-256', bytes);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The bytes cached for `url`, verified, or null. */
async function readCached(url, expectedSha256) {
  const api = cacheApi();
  if (!api) return null;
  let cache;
  try {
    cache = await api.open(CACHE_NAME);
  } catch {
    return null;
  }
  const res = await cache.match(url);
  if (!res) return null;
  const stored = res.headers.get('x-webvlm-sha256');
  const bytes = new Uint8Array(await res.arrayBuffer());
  const actual = await sha256Hex(bytes);
  if (!stored || stored !== actual || (expectedSha256 && expectedSha256 !== actual)) {
    await cache.delete(url);
    return null;
  }
  return bytes;
}

async function writeCached(url, bytes) {
  const api = cacheApi();
  if (!api) return;
  const sha = await sha256Hex(bytes);
  try {
    const cache = await api.open(CACHE_NAME);
    await cache.put(url, new Response(bytes, {
      headers: {
        'content-type': 'application/octet-stream',
        'content-length': String(bytes.byteLength),
        'x-webvlm-sha256': sha,
        'x-webvlm-stored': new Date().toISOString(),
      },
    }));
  } catch (e) {
    const quota = e && (e.name === 'QuotaExceededError' || /quota/i.test(String(e.message)));
    throw new CacheError(
      quota
        ? `the weight cache is full (storing ${url} needs ${bytes.byteLength} bytes); clear cached models to cache this one`
        : `could not cache ${url}: ${e && e.message}`,
      { url },
    );
  }
}

/**
 * Fetches `url` into one Uint8Array, reporting `{phase: "download", loaded, total, text, file, cached}`.
 * With `cache: true` (default) a verified cached copy is used without any network request, and a fresh download
 * is stored. A failed cache write does not fail the download: it is reported through `onWarning`.
 */
export async function fetchBytes(url, { onProgress, signal, cache = true, sha256, optional = false, onWarning, fetchImpl } = {}) {
  const file = url.split('/').pop().split('?')[0];
  if (cache) {
    const hit = await readCached(url, sha256);
    if (hit) {
      onProgress?.({ phase: 'download', loaded: hit.byteLength, total: hit.byteLength, file, cached: true, text: `${file}: from cache` });
      return hit;
    }
  }
  let res;
  try {
    res = await (fetchImpl || fetch)(url, { signal, credentials: 'omit' });
  } catch (e) {
    if (signal?.aborted) throw new CancelledError('download cancelled', { url });
    throw new NetworkError(`could not download ${url}: ${e && e.message} (offline, blocked by CORS or by the page's CSP?)`, { url, file });
  }
  if (!res.ok) {
    if (optional && res.status === 404) return null;
    throw new NetworkError(`could not download ${url}: HTTP ${res.status}${res.status === 404 ? ' (missing model file)' : ''}`, { url, status: res.status, file });
  }
  const total = Number(res.headers.get('content-length')) || 0;
  let bytes;
  if (res.body && res.body.getReader) {
    const reader = res.body.getReader();
    let buf = new Uint8Array(total || 1 << 20);
    let loaded = 0;
    let lastReport = 0;
    for (;;) {
      let step;
      try {
        step = await reader.read();
      } catch (e) {
        if (signal?.aborted) throw new CancelledError('download cancelled', { url });
        throw new NetworkError(`download of ${url} failed: ${e && e.message}`, { url, file });
      }
      if (step.done) break;
      const chunk = step.value;
      if (loaded + chunk.byteLength > buf.byteLength) {
        const bigger = new Uint8Array(Math.max(buf.byteLength * 2, loaded + chunk.byteLength));
        bigger.set(buf.subarray(0, loaded));
        buf = bigger;
      }
      buf.set(chunk, loaded);
      loaded += chunk.byteLength;
      if (loaded - lastReport > (1 << 20) || loaded === total) {
        lastReport = loaded;
        onProgress?.({ phase: 'download', loaded, total: total || loaded, file, cached: false, text: `${file}: ${mb(loaded)} / ${total ? mb(total) : '?'} MB` });
      }
    }
    bytes = loaded === buf.byteLength ? buf : buf.slice(0, loaded);
  } else {
    bytes = new Uint8Array(await res.arrayBuffer());
  }
  onProgress?.({ phase: 'download', loaded: bytes.byteLength, total: bytes.byteLength, file, cached: false, text: `${file}: downloaded` });
  if (sha256) {
    const actual = await sha256Hex(bytes);
    if (actual !== sha256) throw new NetworkError(`${url}: SHA-256 ${actual} does not match the expected ${sha256}`, { url, file });
  }
  if (cache) {
    try {
      await writeCached(url, bytes);
    } catch (e) {
      onWarning?.(e);
    }
  }
  return bytes;
}

const mb = (n) => (n / 1048576).toFixed(1);

/** Models in the weight cache: `[{url, bytes, sha256, stored}]`. */
export async function listCachedModels() {
  const api = cacheApi();
  if (!api) return [];
  const cache = await api.open(CACHE_NAME);
  const out = [];
  for (const req of await cache.keys()) {
    const res = await cache.match(req);
    out.push({
      url: req.url,
      bytes: Number(res?.headers.get('content-length')) || 0,
      sha256: res?.headers.get('x-webvlm-sha256') || null,
      stored: res?.headers.get('x-webvlm-stored') || null,
    });
  }
  return out;
}

/** Removes cached weights: all of them, or those whose URL starts with `prefix`. Returns how many. */
export async function clearCache(prefix) {
  const api = cacheApi();
  if (!api) return 0;
  if (!prefix) {
    const n = (await listCachedModels()).length;
    await api.delete(CACHE_NAME);
    return n;
  }
  const cache = await api.open(CACHE_NAME);
  let n = 0;
  for (const req of await cache.keys()) {
    if (req.url.startsWith(prefix)) {
      await cache.delete(req);
      n++;
    }
  }
  return n;
}
