/**
 * The host-side tensor type, below every layer that passes tensors around (weight loaders, prompt
 * parameters, optimisers, checkpoints), so none of them imports another's file format for it.
 */

/** A float32 tensor in host memory: the currency between loaders, graphs and trainers. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}
