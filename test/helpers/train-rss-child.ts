// Runs one training in a child process and prints its peak resident set size: argv = out dir, limit.
import { join } from 'node:path';
import { train } from '../../src/train/index.js';
import { sharedDir } from './shared.js';

const [out, limit] = process.argv.slice(2) as [string, string];
await train({
  method: 'tang',
  model: join(sharedDir(), 'reference', 'tiny-vit-p16'),
  dataset: 'agiqa-3k',
  root: join(sharedDir(), 'datasets', 'agiqa-3k'),
  out,
  epochs: 1,
  limit: Number(limit),
  seed: 0,
  threads: 1,
});
// kilobytes, as getrusage reports it
process.stdout.write(JSON.stringify({ maxRssKb: process.resourceUsage().maxRSS }) + '\n');
