/**
 * What weight loaders need of a tensor file, whatever its format: safetensors or a PyTorch archive
 * (`torch.save` state dict, TorchScript). Both are read one tensor at a time by positioned reads.
 */
import { readFileHead } from '../util/fs.js';
import type { HostTensor } from '../graph/tensor.js';
import { SafeTensorsFile } from './safetensors.js';
import { TorchFile, legacyTorchFormat } from './torch-file.js';
import { ZipArchive } from '../util/zip.js';

export interface TensorFile {
  readonly path: string;
  keys(): string[];
  has(name: string): boolean;
  info(name: string): { shape: number[] };
  /** a floating-point tensor as float32 */
  readFloat32(name: string): HostTensor;
  close(): void;
}

/**
 * Opens a tensor file by its content: a zip archive or a pickle (PyTorch's legacy format, refused by name) is
 * PyTorch's, anything else is tried as safetensors. Only a regular file is opened.
 */
export function openTensorFile(path: string): TensorFile {
  const head = readFileHead(path, 512, 'weights file');
  return ZipArchive.looksLikeZip(head) || legacyTorchFormat(head) !== undefined || /\.(pt|pth|bin|ckpt)$/i.test(path)
    ? TorchFile.open(path)
    : SafeTensorsFile.open(path);
}

/**
 * The prefix under which `name` is found, when the file keeps the tensors in a sub-dict (pyiqa's LIQE
 * checkpoint: `params.clip_model.visual.conv1.weight`): '' for a top-level name, undefined when absent or
 * when several prefixes would fit.
 */
export function prefixOf(file: TensorFile, name: string): string | undefined {
  if (file.has(name)) return '';
  const found = file.keys().filter((k) => k.endsWith(`.${name}`));
  return found.length === 1 ? found[0]!.slice(0, -name.length) : undefined;
}

/** A view of the tensors under `prefix`, by their names below it. */
export function withPrefix(file: TensorFile, prefix: string): TensorFile {
  if (prefix === '') return file;
  return {
    path: file.path,
    keys: () => file.keys().flatMap((k) => (k.startsWith(prefix) ? [k.slice(prefix.length)] : [])),
    has: (name) => file.has(prefix + name),
    info: (name) => file.info(prefix + name),
    readFloat32: (name) => file.readFloat32(prefix + name),
    close: () => file.close(),
  };
}
