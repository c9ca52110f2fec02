// Types of the webvlm npm package.

export type Dtype = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_1';

export interface Progress {
  /** download: weights from network or cache; upload: to the GPU; compile: shader pipelines; warning: non-fatal */
  phase: 'download' | 'upload' | 'compile' | 'ready' | 'warning';
  loaded: number;
  total: number;
  text: string;
  file?: string;
  /** download only: served from the weight cache without a network request */
  cached?: boolean;
  error?: WebvlmError;
}

export type ModelBytes = string | Blob | Uint8Array | ArrayBuffer;

/** A Hugging Face repo id (`"HuggingFaceTB/SmolVLM-256M-Instruct"`), a `.gguf` URL, a directory URL ending in `/`, or: */
export type ModelSpec =
  | string
  | { gguf: ModelBytes; mmproj?: ModelBytes; id?: string; sha256?: { gguf?: string; mmproj?: string } }
  | { repo: string; revision?: string; host?: string; sha256?: Record<string, string> }
  | { baseUrl: string; id?: string; sha256?: Record<string, string> }
  | { files: Record<string, ModelBytes>; id?: string };

export interface EngineOptions {
  /** Weight dtype of linear layers; default: keep the file's (quantized GGUF stays quantized; bf16 becomes f16
   *  where the adapter has shader-f16 and stays bf16 elsewhere). */
  dtype?: Dtype;
  /** KV-cache length in tokens (default 2048, capped by the model). */
  maxContext?: number;
  onProgress?: (p: Progress) => void;
  /** Aborts downloads. */
  signal?: AbortSignal;
  /** Use and fill the weight cache (default true). */
  cache?: boolean;
  /** Where to fetch webvlm_bg.wasm from (default: beside the package's wasm/webvlm.js). */
  wasmUrl?: string | URL;
  /** Run one tiny generation after loading so shader compilation happens during load (default true). */
  warmup?: boolean;
}

export interface WorkerEngineOptions extends EngineOptions {
  /** Your own module worker running `webvlm/worker.js` (for bundlers that rewrite worker URLs). */
  worker?: Worker;
}

export type ImageInput = string | Blob | ImageBitmap | ImageData | Uint8Array | ArrayBuffer | HTMLImageElement | HTMLCanvasElement | OffscreenCanvas;

export type ContentPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: { url: string } | string }
  | { type: 'image'; image: ImageInput };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string | ContentPart[];
}

export interface ChatRequest {
  messages: ChatMessage[];
  stream?: boolean;
  max_tokens?: number;
  temperature?: number;
  top_k?: number;
  top_p?: number;
  /** Hugging Face's: every distinct id of the prompt and the answer so far, logit / p if > 0 else · p (1 = off). */
  repetition_penalty?: number;
  seed?: number;
  /** Stops generation; a stream then ends with finish_reason "cancelled". */
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length' | 'cancelled';

export interface GenerationStats {
  prefillMs: number;
  decodeMs: number;
  imageEncodeMs: number;
  imagesFromCache: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  submissionsPerToken: number;
  dispatchesPerToken: number;
  totalMs: number;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: { index: number; message: { role: 'assistant'; content: string }; finish_reason: FinishReason }[];
  usage: Usage;
  webvlm: GenerationStats;
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: { role?: 'assistant'; content?: string }; finish_reason: FinishReason | null }[];
  /** on the last chunk only */
  usage?: Usage;
  webvlm?: GenerationStats;
}

export interface ChatCompletionStream extends AsyncIterableIterator<ChatCompletionChunk> {
  abort(): void;
}

export interface GpuProfile {
  /** GPU time per kernel (`shader:entry defines`), largest first. */
  kernels: { kernel: string; dispatches: number; gpu_ms: number }[];
  submissions: number;
  gpu_ms: number;
  /** Dispatches past the 2048 one submission can time. */
  untimed_dispatches: number;
}
export interface AdapterInfo {
  adapter: string;
  backend: string;
  driver: string;
  shaderF16: boolean;
  subgroups: boolean;
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  /** A CPU emulation of a GPU (SwiftShader, lavapipe): matrix products take the barrier-free kernel. */
  cpuAdapter: boolean;
  /** The subgroup size where subgroups exist and the adapter has one size (SwiftShader: 4); else null. */
  subgroupSize: number | null;
  /** Timestamp queries exist: startProfiling works. */
  timestamps: boolean;
}

export interface LoadReport {
  weightBytes: number;
  /** The largest tensor in the model files (from their headers). */
  largestTensorBytes: number;
  /** The largest single read from a weight file: weights are read in row chunks of at most ~4 MiB. */
  largestReadBytes: number;
  wasmMemoryBefore: number;
  /** wasm memory when the first tensor data was read: metadata, tokenizer and template are loaded by then. */
  wasmMemoryAtFirstWeight: number;
  /** wasmMemoryAfter - wasmMemoryAtFirstWeight: what streaming the weights to the GPU cost in wasm memory. */
  weightPhaseGrowth: number;
  /** wasm memory never shrinks, so this bounds the peak of the load. */
  wasmMemoryAfter: number;
  loadMs: number;
  isVlm: boolean;
  maxContext: number;
}

export interface PipelineRequest {
  question: string;
  image?: ImageInput;
  /** "vlm" (default): the VLM writes the search query from image + question; "legacy": a text rephraser. */
  arm?: 'vlm' | 'legacy';
  k?: number;
  tags?: string[];
  ocrText?: string;
  /** Base URL of the search/v1 server; a relative one is resolved against the page (default: location.origin). */
  searchUrl?: string;
  /** PipelineConfig overrides, serde names of src/pipeline (prompts, timeouts, top_k, max_snippet_chars, answer…). */
  config?: Record<string, unknown>;
  /** Answer with a remote OpenAI-compatible endpoint (SSE) instead of this engine; the endpoint must allow the
   *  page's origin (CORS) and the page's CSP must list it in connect-src. When it fails before any text, this
   *  engine answers and `degraded` says so (unless `config.fallback_to_local` is false). */
  generator?: RemoteGenerator;
  signal?: AbortSignal;
}
export interface RemoteGenerator {
  /** `https://host` (then `/v1/chat/completions` is appended), `…/v1`, or the full `…/chat/completions` URL. */
  url: string;
  /** The request's `model` field (default "default"). */
  model?: string;
  /** Sent as `Authorization: Bearer …`. */
  apiKey?: string;
}
export interface TraceEntry {
  step: 'caption' | 'rephrase' | 'retrieve' | 'generate';
  via: string;
  input: string;
  output: string;
  ms: number;
  error: string | null;
}
export type PipelineEvent = { type: 'step'; entry: TraceEntry } | { type: 'text'; text: string };
export interface PipelineResult {
  question: string;
  arm: string;
  caption: string;
  query: string;
  documents: { id: string; rank: number; score: number; title: string; url: string; snippet: string; source: string }[];
  answer: string;
  citations: { n: number; id: string; title: string; url: string }[];
  /** Why the answer is less than it should be (no sources, cut off…), or null. */
  degraded: string | null;
  trace: TraceEntry[];
}

/** One benchmark item, as in `webvlm eval`'s JSONL. */
export interface EvalItem {
  id: string;
  image: ImageInput;
  question: string;
  answers?: string[];
  gold_doc_ids?: string[];
  tags?: string[];
  ocr_text?: string;
}
/** `errors`: the steps that failed on this item ("step: error"); a failed retrieval scores as a miss. */
export interface EvalArmRecord { query: string; retrieved_ids: string[]; answer: string; ms: number; errors?: string[] }
export interface EvalRecord {
  /** `image`: the item's image as given when it is a string (a relative URL stays relative), else "". */
  id: string; image: string; question: string; answers: string[]; gold_doc_ids: string[];
  legacy: EvalArmRecord; vlm: EvalArmRecord; judge: null | { swapped: boolean; verdict: string; rationale?: string };
}
/** exact / alias match and token F1 are means over the `answerable` items (those with gold answers). */
export interface EvalArmSummary { n: number; answerable: number; exact_match: number; alias_match: number; token_f1: number; recall_at_k: number | null; mrr: number | null; mean_ms: number; failed_items: number }
export interface EvalSummary {
  n: number; k: number; legacy: EvalArmSummary; vlm: EvalArmSummary;
  mcnemar_exact_match: { legacy_only: number; vlm_only: number; p_value: number };
  relative_gain: Record<'exact_match' | 'alias_match' | 'token_f1' | 'recall_at_k' | 'mrr', number | null>;
  sbs: null | { judged: number; invalid: number; vlm_wins: number; legacy_wins: number; ties: number; win_rate: number; ci_low: number; ci_high: number; seed: number };
}
export interface EvalOptions {
  /** Base URL of the search/v1 server; a relative one is resolved against the page (default: location.origin). */
  searchUrl?: string;
  k?: number;
  seed?: number;
  config?: Record<string, unknown>;
  /** The answer generator of both arms (default: this engine). */
  generator?: RemoteGenerator;
  signal?: AbortSignal;
  onRecord?: (record: EvalRecord) => void;
}

export interface WebvlmEngine {
  /** Side-by-side evaluation of the two pipeline arms on a small set (records, summary, HTML report; no judge). */
  evaluate(items: EvalItem[], options?: EvalOptions): Promise<{ records: EvalRecord[]; summary: EvalSummary; reportHtml: string }>;
  /** The Rust pipeline: caption → search query → retrieval → answer with [n] citations, with a trace. */
  runPipeline(request: PipelineRequest, onEvent?: (e: PipelineEvent) => void): Promise<PipelineResult>;
  readonly modelId: string;
  readonly isVlm: boolean;
  /** Non-fatal problems of the load (e.g. a CacheError when the weight cache is full). */
  readonly warnings: WebvlmError[];
  /** Informational notes of the load, e.g. "this adapter has no shader-f16; computing in f32". */
  readonly notes: string[];
  chat: {
    completions: {
      create(req: ChatRequest & { stream: true }): ChatCompletionStream;
      create(req: ChatRequest & { stream?: false }): Promise<ChatCompletion>;
    };
  };
  adapterInfo(): AdapterInfo;
  loadReport(): LoadReport;
  /** Starts timing every GPU dispatch with timestamp queries (each dispatch gets a compute pass of its own, so
   * take speeds from unprofiled runs). Rejects with MissingFeatureError where the adapter has no timestamps. */
  startProfiling(): Promise<void>;
  /** Stops profiling: GPU time per kernel since startProfiling. */
  stopProfiling(): Promise<GpuProfile>;
  dispose(): void;
}

/** The engine of createEngine, in this thread (its constructor takes the wasm object: use createEngine). */
export interface Engine extends WebvlmEngine {}
export class Engine {
  private constructor();
  /** Milliseconds createEngine took. */
  readonly loadMs: number;
}
/** The engine of createWorkerEngine, in a Web Worker (its constructor loads nothing: use createWorkerEngine). */
export interface WorkerEngine extends WebvlmEngine {}
export class WorkerEngine {
  private constructor();
  readonly worker: Worker;
}

export function createEngine(model: ModelSpec, options?: EngineOptions): Promise<Engine>;
export function createWorkerEngine(model: ModelSpec, options?: WorkerEngineOptions): Promise<WorkerEngine>;

/** What a ModelSpec fetches, as createEngine reads it; throws InvalidArgumentError for a spec it cannot use. */
export type ResolvedModel =
  | { kind: 'gguf'; gguf: ModelBytes; mmproj?: ModelBytes; sha256?: { gguf?: string; mmproj?: string }; id: string }
  /** a Hugging Face repo, or a directory URL in its layout; `baseUrl` ends in `/` */
  | { kind: 'hf'; baseUrl: string; sha256?: Record<string, string>; id: string }
  | { kind: 'files'; files: Record<string, ModelBytes>; id: string };
export function resolveModel(model: ModelSpec): ResolvedModel;
export function probeAdapter(options?: { wasmUrl?: string | URL }): Promise<AdapterInfo>;
export function initRuntime(options?: { wasmUrl?: string | URL }): Promise<unknown>;
export function imageBytes(input: ImageInput, options?: { signal?: AbortSignal }): Promise<Uint8Array>;

export interface CachedModel {
  url: string;
  bytes: number;
  sha256: string | null;
  stored: string | null;
}
export const CACHE_NAME: string;
export function listCachedModels(): Promise<CachedModel[]>;
/** Removes all cached weights, or those whose URL starts with `prefix`; resolves to how many. */
export function clearCache(prefix?: string): Promise<number>;

export class WebvlmError extends Error {
  url?: string;
  status?: number;
  file?: string;
}
export class WebGPUNotAvailableError extends WebvlmError {}
export class LimitsError extends WebvlmError {
  limit: string;
  needed: number;
  offered: number;
  what: string;
}
export class MissingFeatureError extends WebvlmError {
  feature: string;
}
export class DeviceLostError extends WebvlmError {}
export class ModelFormatError extends WebvlmError {}
export class ImageError extends WebvlmError {}
export class ContextOverflowError extends WebvlmError {
  tokens: number;
  context: number;
}
export class CancelledError extends WebvlmError {}
export class NetworkError extends WebvlmError {}
export class CacheError extends WebvlmError {}
export class InvalidArgumentError extends WebvlmError {}

/** An error as a plain object (it crosses postMessage): its `name`, `message` and the typed errors' fields. */
export interface SerializedError {
  name: string;
  message: string;
  limit?: string;
  needed?: number;
  offered?: number;
  what?: string;
  feature?: string;
  tokens?: number;
  context?: number;
  url?: string;
  status?: number;
  file?: string;
}
export function serializeError(e: unknown): SerializedError;
/** Any thrown value (a wasm error with a `name`, a DOMException, a SerializedError) → the WebvlmError subclass its
 *  name says (AbortError → CancelledError, QuotaExceededError → CacheError, DataCloneError → InvalidArgumentError;
 *  an unknown name → WebvlmError). A WebvlmError is returned as it is. */
export function toWebvlmError(e: unknown): WebvlmError;
