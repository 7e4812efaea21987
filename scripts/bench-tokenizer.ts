/**
 * Speed sanity check of the CLIP tokenizer: tokenizes 10,000 distinct prompts into a [10000, 77] batch
 * and prints the time. Run: node --import tsx scripts/bench-tokenizer.ts
 * A figure, not a test: it should be well under a second on any developer machine.
 */
import { performance } from 'node:perf_hooks';
import { ClipTokenizer } from '../src/clip/tokenizer.js';

// 20 x 25 x 20 combinations make 10,000 distinct prompts shaped like AIGC captions.
const ADJECTIVES = [
  'a beautiful',
  'an ugly',
  'a blurry',
  'a sharp',
  'a noisy',
  'a vivid',
  'a dark',
  'a bright',
  'a surreal',
  'a realistic',
  'an ancient',
  'a futuristic',
  'a tiny',
  'a giant',
  'a cozy',
  'a haunted',
  'a minimalist',
  'an ornate',
  'a glowing',
  'a weathered',
];
const SUBJECTS = [
  'cat',
  'dragon',
  'lighthouse',
  'robot',
  'forest temple',
  'city street',
  'portrait of a woman',
  'bowl of ramen',
  'mountain lake',
  'space station',
  'steampunk airship',
  'knight in armour',
  'coral reef',
  'desert caravan',
  'snowy village',
  'neon alley',
  'wooden cabin',
  'old library',
  'sunflower field',
  'marble statue',
  'cyberpunk samurai',
  'fox in the snow',
  'vintage car',
  'crystal cave',
  'floating island',
];
const STYLES = [
  'anime style',
  'baroque style',
  'oil painting',
  'watercolor',
  'unreal engine, 8k',
  'HDR lighting',
  'sci-fi style',
  'abstract style',
  'photorealistic, 35mm',
  'pixel art',
  'ukiyo-e',
  'concept art, trending on artstation',
  'low poly',
  'hyper detail',
  'studio ghibli',
  'film noir',
  'isometric view',
  'long-shot',
  'close-up',
  'macro photo',
];

const prompts: string[] = [];
for (const a of ADJECTIVES) for (const s of SUBJECTS) for (const st of STYLES) prompts.push(`${a} ${s}, ${st}`);

function ms(t0: number): string {
  return `${(performance.now() - t0).toFixed(1)} ms`;
}

let t0 = performance.now();
const tok = ClipTokenizer.default();
console.log(`load (OpenAI gz):                         ${ms(t0)}`);

t0 = performance.now();
let batch = tok.tokenizeBatch(prompts);
console.log(`tokenizeBatch ${prompts.length} prompts, cold cache: ${ms(t0)}`);

t0 = performance.now();
batch = tok.tokenizeBatch(prompts);
console.log(`tokenizeBatch ${prompts.length} prompts, warm cache: ${ms(t0)}`);

// Also distinct words every time: a fresh tokenizer on prompts with made-up words defeats the cache.
const fresh = ClipTokenizer.default();
const unseen = prompts.map((p, i) => `${p} zq${i.toString(36)}xv`);
t0 = performance.now();
fresh.tokenizeBatch(unseen);
console.log(`tokenizeBatch ${unseen.length} prompts, each with an unseen word: ${ms(t0)}`);
console.log(`(checksum ${batch.reduce((s, v) => (s + v) % 1_000_003, 0)})`);
