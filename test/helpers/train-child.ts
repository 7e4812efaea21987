// Runs one training in a child process, for the kill -9 test: argv = out dir, method.
import { join } from 'node:path';
import { train } from '../../src/train/index.js';
import { sharedDir } from './shared.js';

const [out, method] = process.argv.slice(2) as [string, string];
await train({
  method,
  model: join(sharedDir(), 'reference', 'tiny-vit-p32'),
  dataset: 'agiqa-3k',
  root: join(sharedDir(), 'datasets', 'agiqa-3k'),
  out,
  epochs: 4,
  limit: 48,
  batchSize: 8,
  seed: 3,
  threads: 1,
});
