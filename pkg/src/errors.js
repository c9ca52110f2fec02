// Typed errors of the webvlm JS API. Every error thrown by the package is a `WebvlmError` subclass whose `name`
// says what kind it is; numbers (limits, token counts) ride along as fields.

export class WebvlmError extends Error {
  constructor(message, fields = {}) {
    super(message);
    this.name = new.target.name;
    Object.assign(this, fields);
  }
}
/** No WebGPU in this browser/context, or no adapter/device could be opened. */
export class WebGPUNotAvailableError extends WebvlmError {}
/** The adapter's limits are too small for this model/dtype: see `limit`, `needed`, `offered`. */
export class LimitsError extends WebvlmError {}
/** The adapter lacks a feature the chosen path needs (e.g. `shader-f16`): see `feature`. */
export class MissingFeatureError extends WebvlmError {}
/** The GPU device was lost; create the engine again. */
export class DeviceLostError extends WebvlmError {}
/** A model file is missing, malformed or of an unsupported architecture. */
export class ModelFormatError extends WebvlmError {}
/** An input image could not be read (not an image, too large, unsupported format). */
export class ImageError extends WebvlmError {}
/** The prompt does not fit the context: see `tokens`, `context`. */
export class ContextOverflowError extends WebvlmError {}
/** Generation (or a load) was cancelled through its AbortSignal. */
export class CancelledError extends WebvlmError {}
/** A download failed (HTTP status, CORS, offline): see `url`, `status`. */
export class NetworkError extends WebvlmError {}
/** Writing the weight cache failed (quota exceeded, storage disabled); the engine still works. */
export class CacheError extends WebvlmError {}
/** A call got arguments it cannot use. */
export class InvalidArgumentError extends WebvlmError {}

const CLASSES = {
  WebvlmError, WebGPUNotAvailableError, LimitsError, MissingFeatureError, DeviceLostError, ModelFormatError,
  ImageError, ContextOverflowError, CancelledError, NetworkError, CacheError, InvalidArgumentError,
};

const FIELDS = ['limit', 'needed', 'offered', 'what', 'feature', 'tokens', 'context', 'url', 'status', 'file'];

/** Plain object form (for postMessage across the worker boundary). */
export function serializeError(e) {
  const out = { name: (e && e.name) || 'WebvlmError', message: String((e && e.message) || e) };
  for (const f of FIELDS) if (e && e[f] !== undefined) out[f] = e[f];
  return out;
}

/** Any thrown value (a wasm error with a `name`, a DOMException, a serialized error) → a typed error. */
export function toWebvlmError(e) {
  if (e instanceof WebvlmError) return e;
  const plain = serializeError(e);
  let name = plain.name;
  if (name === 'AbortError') name = 'CancelledError';
  if (name === 'QuotaExceededError') name = 'CacheError';
  // postMessage refused a value (a function, a DOM node…) of the request
  if (name === 'DataCloneError') name = 'InvalidArgumentError';
  const Cls = CLASSES[name] || WebvlmError;
  const { name: _n, message, ...fields } = plain;
  const err = new Cls(message, fields);
  if (e && e.stack && !(e instanceof WebvlmError)) err.cause = e;
  return err;
}
