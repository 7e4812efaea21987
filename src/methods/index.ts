/**
 * The methods layer's public face: the registry (`registry.ts`), backbones (`backbone.ts`), where a metric's
 * parameters come from (`load.ts`), the Metric object (`metric.ts`) and `createMetric` (`create.ts`).
 */
export type { MethodInfo, Method, MethodModel, AuxiliaryTarget, Predictions, Options } from './method.js';
export { Scorer, checkBatchSize, MAX_BATCH } from './graphs.js';
export { PRETRAINED, PYIQA_WEIGHTS_REPO, describePretrained, fetchPretrained, findPretrained } from './pretrained.js';
export type { PretrainedFile, PretrainedMetric } from './pretrained.js';
export { METHODS, registerMethod, getMethod, listMetrics, resolveMethodName, type MethodDescription } from './registry.js';
export { loadBackbone } from './backbone.js';
export { metricFor, type Metric, type MetricOptions, type MetricSource, type ImageInput, type ScoreResult } from './metric.js';
export { createMetric } from './create.js';
export { MAX_DECODE_THREADS, checkDecodeThreads, defaultDecodeThreads } from './prepare-pool.js';
export { isReleasedFile } from './load.js';
