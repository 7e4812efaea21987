/**
 * promptiqa: blind image quality assessment with CLIP prompt learning, on ONNX Runtime.
 *
 * The library entry. The usual start is `createMetric(name, { model })` and `metric.score(file)`;
 * `train` / `trainRounds` learn a method's prompts on a dataset, `evaluate` reports SRCC/KRCC/PLCC.
 * The lower layers (tokenizer, weights, graph builder, runtime, optimisers) are exported for new methods.
 */

// methods, training, evaluation
export { createMetric, listMetrics, PRETRAINED, fetchPretrained } from './methods/index.js';
export type {
  MethodInfo,
  MethodDescription,
  MetricOptions,
  Metric,
  MetricSource,
  ImageInput,
  ScoreResult,
  PretrainedFile,
  PretrainedMetric,
} from './methods/index.js';
export { train, trainRounds } from './train/index.js';
export type { TrainEvent, TrainOptions, TrainResult } from './train/index.js';
export { evaluate } from './eval/evaluate.js';
export type { EvalOptions, EvalReport } from './eval/evaluate.js';

// figures
export { correlations, srcc, krcc, plcc, fitLogistic4, summarise } from './eval/metrics.js';
export type { Correlations } from './eval/metrics.js';
export { scatterPlotSvg, linePlotSvg } from './eval/plot.js';

// CLIP
export { ClipTokenizer } from './clip/tokenizer.js';
export { loadClipWeights, randomClipWeights, WeightError } from './clip/weights.js';
export type { ClipWeights, VisionWeights, TextWeights, LayerWeights } from './clip/weights.js';
export { ARCHS, archConfig, visionFlops } from './clip/config.js';
export type { ClipConfig } from './clip/config.js';
export { resolveModel, downloadRepo, downloadFile, HubError, CLIP_MODEL_FILES, OPEN_CLIP_MODEL_FILES } from './clip/hub.js';
export type { HubOptions } from './clip/hub.js';
export { WeightBank, visionEncoder, textEncoder, tokenEmbeddings, eotOneHot, similarityLogits } from './clip/encoders.js';
export type { VisionHooks, TextHooks, EncoderOutput } from './clip/encoders.js';
export { SafeTensorsFile, readSafetensors, writeSafetensors } from './clip/safetensors.js';
export { embed } from './clip/embed.js';
export type { EmbedOptions, EmbedResult } from './clip/embed.js';

// images and datasets
export { decodeImage, ImageDecodeError } from './data/image.js';
export type { DecodeOptions } from './data/image.js';
export type { RgbImage } from './data/rgb.js';
export type { WindowPlacement } from './data/preprocess.js';
export { readImageHeader } from './data/image.js';
export type { ImageHeader } from './data/image.js';
export { findUnreadableImages, listUnreadable } from './data/check.js';
export type { UnreadableImage, CheckImagesOptions } from './data/check.js';
export {
  clipPreprocess,
  toTensor,
  resizeBicubic,
  resizeShortSide,
  centerCrop,
  randomCrop,
  randomResizedCrop,
  flipHorizontal,
  slidingWindowBoxes,
  CLIP_MEAN,
  CLIP_STD,
  IMAGENET_MEAN,
  IMAGENET_STD,
} from './data/preprocess.js';
export { listDatasets, loadDataset, imagePath, DatasetError } from './data/datasets.js';
export type { Dataset, DatasetInfo, DatasetItem, LoadOptions } from './data/datasets.js';
export type { DatasetColumns } from './data/datasets.js';
export { splitDataset, splitRounds } from './data/splits.js';
export type { Split, SplitSpec } from './data/splits.js';

// the graph engine
export { Graph, Value, GraphError } from './graph/graph.js';
export * as ops from './graph/graph.js';
export { gradients } from './graph/grad.js';
export {
  CompiledGraph,
  SessionCache,
  InputError,
  resolveDevice,
  webgpuProblem,
  DEVICE_TYPES,
  DEVICES,
  DeviceUnavailableError,
  MAX_BATCH,
  MAX_THREADS_PER_CORE,
} from './graph/runtime.js';
export type { RuntimeOptions, Provider, Device, DeviceType, Tensor, Feed } from './graph/runtime.js';
export { webgpuAdapter, type WebGpuAdapter } from './graph/webgpu.js';

// optimisers and schedules
export { sgd, adam, adamw, cosineWithWarmup, epochCosineWithWarmup, constantLr } from './train/optim.js';
export type { Optimizer, OptimizerState, Params, Schedule } from './train/optim.js';

// utilities
export { parseCsv, toCsv } from './util/csv.js';
export { writeFileAtomic } from './util/fs.js';

// the scoring service
export { createServer, SERVE_DEFAULTS } from './serve/index.js';
export type { ServerOptions, SetupSpec, MetricSetup, ServeLimits } from './serve/index.js';
