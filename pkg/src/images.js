// Image inputs → encoded bytes (PNG / JPEG / WebP) for the wasm image processor.
// Accepted: Uint8Array, ArrayBuffer, Blob/File, ImageBitmap, ImageData, HTMLImageElement/HTMLCanvasElement/
// OffscreenCanvas, and URL strings (`data:` URLs are decoded here, so a strict CSP `connect-src` is no obstacle).

import { ImageError, InvalidArgumentError, NetworkError } from './errors.js';

const DECODABLE = new Set(['image/png', 'image/jpeg', 'image/webp']);

function decodeDataUrl(url) {
  const comma = url.indexOf(',');
  if (comma < 0) throw new ImageError('malformed data: URL (no comma)');
  const meta = url.slice(5, comma);
  const data = url.slice(comma + 1);
  if (/;base64$/i.test(meta)) {
    let bin;
    try {
      bin = atob(data);
    } catch {
      throw new ImageError('malformed data: URL (bad base64)');
    }
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  return new TextEncoder().encode(decodeURIComponent(data));
}

async function rasterToPng(source, width, height) {
  if (typeof OffscreenCanvas === 'undefined') throw new ImageError('this context cannot convert the image; pass PNG/JPEG/WebP bytes');
  const canvas = new OffscreenCanvas(width, height);
  const g = canvas.getContext('2d');
  if (source instanceof ImageData) g.putImageData(source, 0, 0);
  else g.drawImage(source, 0, 0);
  const blob = await canvas.convertToBlob({ type: 'image/png' });
  return new Uint8Array(await blob.arrayBuffer());
}

/** One image input → bytes the engine decodes. */
export async function imageBytes(input, { signal } = {}) {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (ArrayBuffer.isView(input)) return new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  if (typeof Blob !== 'undefined' && input instanceof Blob) {
    if (input.type && !input.type.startsWith('image/')) {
      throw new ImageError(`${input.name || 'the file'} is not an image (type ${input.type}); use a PNG, JPEG or WebP`);
    }
    if (!input.type || DECODABLE.has(input.type)) return new Uint8Array(await input.arrayBuffer());
    // GIF, BMP, AVIF, …: let the browser decode it, re-encode as PNG
    let bmp;
    try {
      bmp = await createImageBitmap(input);
    } catch {
      throw new ImageError(`${input.name || 'the file'} could not be decoded as an image`);
    }
    return rasterToPng(bmp, bmp.width, bmp.height);
  }
  if (typeof ImageBitmap !== 'undefined' && input instanceof ImageBitmap) return rasterToPng(input, input.width, input.height);
  if (typeof ImageData !== 'undefined' && input instanceof ImageData) return rasterToPng(input, input.width, input.height);
  if (input && typeof input === 'object' && 'width' in input && 'height' in input && typeof OffscreenCanvas !== 'undefined') {
    return rasterToPng(input, input.naturalWidth || input.width, input.naturalHeight || input.height);
  }
  if (typeof input === 'string') {
    if (input.startsWith('data:')) return decodeDataUrl(input);
    let res;
    try {
      res = await fetch(input, { signal, credentials: 'omit' });
    } catch (e) {
      throw new NetworkError(`could not fetch the image ${input}: ${e && e.message}`, { url: input });
    }
    if (!res.ok) throw new NetworkError(`could not fetch the image ${input}: HTTP ${res.status}`, { url: input, status: res.status });
    return imageBytes(await res.blob(), { signal });
  }
  throw new ImageError('unsupported image input; pass a Blob/File, ImageBitmap, ImageData, Uint8Array or URL');
}

/**
 * OpenAI-style messages (content parts `{type:"image_url", image_url:{url}}` or `{type:"image", image}`) →
 * engine messages with `{type:"image"}` placeholders, and the image inputs in order.
 */
export function splitMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) throw new InvalidArgumentError('messages must be a non-empty array');
  const images = [];
  const out = messages.map((m) => {
    if (typeof m.content === 'string') return { role: m.role, content: m.content };
    if (!Array.isArray(m.content)) throw new InvalidArgumentError('message content must be a string or an array of parts');
    const parts = m.content.map((p) => {
      if (p.type === 'text') return { type: 'text', text: String(p.text) };
      if (p.type === 'image_url') {
        images.push(typeof p.image_url === 'string' ? p.image_url : p.image_url?.url);
        return { type: 'image' };
      }
      if (p.type === 'image') {
        images.push(p.image ?? p.url);
        return { type: 'image' };
      }
      throw new InvalidArgumentError(`unknown content part type ${JSON.stringify(p.type)}`);
    });
    return { role: m.role, content: parts };
  });
  return { messages: out, images };
}
