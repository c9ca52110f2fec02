// webvlm: vision-language models on WebGPU, in the page or in a Web Worker.
export { createEngine, probeAdapter, initRuntime, resolveModel, Engine } from './src/engine.js';
export { createWorkerEngine, WorkerEngine } from './src/worker_client.js';
export { listCachedModels, clearCache, CACHE_NAME } from './src/fetch.js';
export { imageBytes } from './src/images.js';
export * from './src/errors.js';
