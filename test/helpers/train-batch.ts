/**
 * A random training batch for a method on a backbone, with every auxiliary target the method declares (for tests
 * of the training graph that need no dataset).
 */
import { type AuxiliaryTarget, type Method } from '../../src/methods/method.js';
import { type Backbone, type TrainBatch } from '../../src/methods/graphs.js';
import { Rng } from '../../src/util/rng.js';

/** Two items with what every declared target reads (a distortion class, an alignment score). */
export const TRAIN_ITEMS = [
  { image: 'a', mos: 1, group: 'a', distortion: 'blur' },
  { image: 'b', mos: 2, group: 'b', distortion: 'jpeg' },
];

export function randomTrainBatch(
  method: Method,
  backbone: Backbone,
  auxiliary: readonly AuxiliaryTarget[],
  batch: number,
  seed: number,
): TrainBatch {
  const rng = new Rng(seed);
  const c = backbone.weights.config;
  const size = method.imageInput === 'features' ? c.embedDim : 3 * c.imageSize * c.imageSize;
  return {
    image: Float32Array.from({ length: batch * size }, () => rng.normal()),
    quality: Float32Array.from({ length: batch }, () => rng.uniform()),
    auxiliary: Object.fromEntries(
      auxiliary.map((t) => {
        const info = { mosRange: [0, 5] } as Parameters<typeof t.read>[1];
        const values = new Float32Array(batch * t.size);
        for (let j = 0; j < batch; j++) {
          const item = TRAIN_ITEMS[j % TRAIN_ITEMS.length]!;
          const v = t.read({ ...item, extra: { alignment: rng.uniform() * 5 } }, info)!;
          if (typeof v === 'number') values[j] = v;
          else values.set(v, j * t.size);
        }
        return [t.name, { values, mask: new Float32Array(batch).fill(1) }];
      }),
    ),
  };
}
