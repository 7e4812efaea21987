/**
 * scripts/compare_pyiqa.py's files are what promptiqa reads. The script writes seeded random CLIPs in the
 * real files' layouts and a Hugging Face cache holding them, then runs promptiqa's pretrained path on that
 * cache offline; here its tiny stand-ins (same layouts, small widths) are written by the script itself and
 * scored through the command line with the arguments the script uses. A cache laid out otherwise than
 * huggingface_hub lays it out, or a weights file promptiqa cannot read, fails here in seconds rather than in
 * the middle of an hour-long comparison.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cli } from './helpers/cli.js';
import { sharedDir } from './helpers/shared.js';
import { findTorchPython } from '../src/cli/lib/torch.js';

const SCRIPT = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'scripts', 'compare_pyiqa.py');
const torchPython = findTorchPython();
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Manifest {
  size: string;
  rn50_commit: string;
  weights_commit: string;
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test(
  "compare_pyiqa.py's Hugging Face cache serves promptiqa's pretrained clip-iqa, liqe and liqe-mix offline, and its prompts run clip-iqa+ by hand",
  { skip: torchPython ? false : 'no Python with torch here (python3, /usr/bin/python3): the script writes its weights with torch' },
  async () => {
    const work = mkdtempSync(join(tmpdir(), 'promptiqa-compare-'));
    dirs.push(work);
    execFileSync(
      torchPython!.python,
      [SCRIPT, 'prepare', '--work', work, '--shared', sharedDir(), '--size', 'tiny', '--images', '2', '--threads', '1'],
      { stdio: 'pipe' },
    );
    const manifest = JSON.parse(readFileSync(join(work, 'manifest.json'), 'utf8')) as Manifest;
    assert.equal(manifest.size, 'tiny');
    const cache = join(work, 'hf-cache');

    // huggingface_hub's layout: refs/main names the commit; snapshot entries are relative links into blobs/,
    // named by their sha256 for LFS files (weights) and by git's blob sha1 for the others
    const repos: Array<[string, string, string[]]> = [
      ['timm/resnet50_clip.openai', manifest.rn50_commit, ['config.json', 'open_clip_config.json', 'open_clip_model.safetensors']],
      ['chaofengc/IQA-PyTorch-Weights', manifest.weights_commit, ['liqe_koniq.pt', 'liqe_mix.pt']],
    ];
    for (const [repo, commit, files] of repos) {
      const dir = join(cache, `models--${repo.replace('/', '--')}`);
      assert.equal(readFileSync(join(dir, 'refs', 'main'), 'utf8'), commit);
      assert.deepEqual(readdirSync(join(dir, 'snapshots', commit)).sort(), files);
      for (const f of files) {
        const entry = join(dir, 'snapshots', commit, f);
        assert.ok(lstatSync(entry).isSymbolicLink(), `${repo}/${f}: not a link`);
        const target = readlinkSync(entry);
        assert.match(target, /^\.\.\/\.\.\/blobs\/[0-9a-f]{40,64}$/, `${repo}/${f} -> ${target}`);
        const body = readFileSync(entry);
        const id = /\.(safetensors|pt)$/.test(f)
          ? sha256(body)
          : createHash('sha1').update(`blob ${body.length}\0`).update(body).digest('hex');
        assert.equal(target.split('/').pop(), id, `${repo}/${f}`);
      }
    }

    // as the script runs promptiqa: that cache, offline, no endpoint or token of the developer's, its own cache folder
    const saved = { ...process.env };
    for (const k of ['HF_HOME', 'HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HUGGINGFACE_HUB_CACHE']) delete process.env[k];
    process.env.HF_HUB_CACHE = cache;
    process.env.HF_HUB_OFFLINE = '1';
    process.env.HF_ENDPOINT = 'http://127.0.0.1:9';
    process.env.PROMPTIQA_CACHE = join(work, 'promptiqa-cache');
    try {
      const image = join(sharedDir(), 'datasets', 'agiqa-3k', 'images', 'AttnGAN_normal_000.jpg');
      const score = async (method: string, extra: string[]): Promise<{ score: number; err: string }> => {
        const out = join(work, `${method}.jsonl`);
        const r = await cli('score', image, '--method', method, ...extra, '--format', 'jsonl', '--output', out, '--threads', '1');
        assert.equal(r.code, 0, r.err);
        // the last line: the first says what made the scores
        const rec = JSON.parse(readFileSync(out, 'utf8').trim().split('\n').pop()!) as { file: string; score?: number; error?: string };
        assert.equal(typeof rec.score, 'number', JSON.stringify(rec));
        return { score: rec.score!, err: r.err };
      };
      const clipIqa = await score('clip-iqa', []);
      assert.ok(clipIqa.score > 0 && clipIqa.score < 1, String(clipIqa.score));
      // where each file came from is printed: the script's repository at the commit it recorded
      assert.match(clipIqa.err, new RegExp(`timm/resnet50_clip\\.openai.*${manifest.rn50_commit}`));
      const liqe = await score('liqe', []);
      const mix = await score('liqe-mix', []);
      for (const [r, file] of [
        [liqe, 'liqe_koniq.pt'],
        [mix, 'liqe_mix.pt'],
      ] as const) {
        assert.ok(r.score >= 1 && r.score <= 5, String(r.score));
        assert.match(r.err, new RegExp(`chaofengc/IQA-PyTorch-Weights.*${manifest.weights_commit}.*${file.replace('.', '\\.')}`));
      }
      // the two LIQE files hold different weights
      assert.ok(Math.abs(liqe.score - mix.score) > 1e-6, `${liqe.score} ${mix.score}`);
      // clip-iqa+ by hand, as the script runs it: its prompts file as the checkpoint, the RN50 from the cache
      const prompts = join(work, 'clipiqa+', 'CLIP-IQA+_learned_prompts-random.pth');
      const plus = await score('clip-iqa+', ['--checkpoint', prompts, '--model', 'timm/resnet50_clip.openai', '--quiet']);
      assert.ok(plus.score > 0 && plus.score < 1, String(plus.score));
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  },
);
