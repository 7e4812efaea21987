/**
 * What the CLIP loader makes of files that are not quite what they seem: the image tower decided from every
 * distinctive name (a missing one is named, not taken for the other tower), a weight file or config that is a
 * folder or a FIFO refused by name, tensors a CLIP has no place for listed and refused where the load is
 * strict (pyiqa's released files), and LIQE's architecture checked as pyiqa asserts it.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '../src/clip/safetensors.js';
import { readTorchTensors } from '../src/clip/torch-file.js';
import { loadClipWeights } from '../src/clip/weights.js';
import type { HostTensor } from '../src/graph/tensor.js';
import { createMetric } from '../src/methods/index.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
const tmp = mkdtempSync(join(tmpdir(), 'promptiqa-weights-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const WIDE = join(ref, 'images', 'wide_640x480.png');

/** The float tensors of a reference safetensors file, edited by `edit` (names with a prefix, tensors added or removed), written to `name`. */
function rewrite(from: string, name: string, edit: (t: Map<string, HostTensor>) => Map<string, HostTensor> | void): string {
  const tensors = readSafetensors(join(ref, from)).tensors;
  const out = edit(tensors) ?? tensors;
  const path = join(tmp, name);
  writeSafetensors(path, Object.fromEntries(out));
  return path;
}

const prefixed = (t: Map<string, HostTensor>, prefix: string): Map<string, HostTensor> => new Map([...t].map(([k, v]) => [prefix + k, v]));
const scalar = (v: number): HostTensor => ({ shape: [1], data: Float32Array.from([v]) });

async function scoreOnce(name: string, opts: Parameters<typeof createMetric>[1]): Promise<number> {
  const m = await createMetric(name, { batchSize: 1, threads: 1, cache: false, ...opts });
  try {
    return await m.score(WIDE);
  } finally {
    await m.close();
  }
}

describe('the image tower from what is present', () => {
  test('a ResNet state dict missing visual.layer1.0.conv1.weight is named as missing that, not taken for a ViT', async () => {
    const path = rewrite('tiny-rn/openai.safetensors', 'rn-no-layer1-conv1.safetensors', (t) => {
      t.delete('visual.layer1.0.conv1.weight');
    });
    await assert.rejects(loadClipWeights(path, { cache: null }), (err: Error) => {
      assert.match(err.message, /missing tensor "visual\.layer1\.0\.conv1\.weight"/);
      assert.doesNotMatch(err.message, /positional_embedding/);
      return true;
    });
    // without its stem's first conv it is still a ResNet, and that conv is what is named
    const noStem = rewrite('tiny-rn/openai.safetensors', 'rn-no-conv1.safetensors', (t) => {
      t.delete('visual.conv1.weight');
    });
    await assert.rejects(loadClipWeights(noStem, { cache: null }), /missing tensor "visual\.conv1\.weight"/);
  });

  test('names of both towers, or of neither, are refused with what was found', async () => {
    const vit = readSafetensors(join(ref, 'tiny-vit-p32', 'openai.safetensors')).tensors;
    const both = rewrite('tiny-rn/openai.safetensors', 'both.safetensors', (t) => {
      t.set('visual.class_embedding', vit.get('visual.class_embedding')!);
    });
    await assert.rejects(
      loadClipWeights(both, { cache: null }),
      /tensors of both image towers, a ResNet's \(.*visual\.layer1\.\*.*\) and a ViT's \(visual\.class_embedding\)/,
    );
    const none = rewrite(
      'tiny-rn/openai.safetensors',
      'text-only.safetensors',
      (t) => new Map([...t].filter(([k]) => !k.startsWith('visual.'))),
    );
    await assert.rejects(loadClipWeights(none, { cache: null }), /no image tower: none of a ResNet's tensors/);
  });
});

describe('files that are not regular files', () => {
  test('a model folder whose model.safetensors is a folder: an error naming that path', async () => {
    const dir = join(tmp, 'folder-model');
    mkdirSync(join(dir, 'model.safetensors'), { recursive: true });
    await assert.rejects(loadClipWeights(dir, { cache: null }), (err: Error) => {
      assert.ok(err.message.includes(join(dir, 'model.safetensors')), err.message);
      assert.match(err.message, /a folder/);
      assert.doesNotMatch(err.message, /EISDIR/);
      return true;
    });
  });

  test('a config.json or vocab.json that is a FIFO is refused by name without blocking', { timeout: 30_000 }, async (t) => {
    const dir = join(tmp, 'fifo-model');
    mkdirSync(dir);
    copyFileSync(join(ref, 'tiny-vit-p32', 'model.safetensors'), join(dir, 'model.safetensors'));
    if (spawnSync('mkfifo', [join(dir, 'config.json')]).status !== 0) return t.skip('mkfifo is not available');
    await assert.rejects(loadClipWeights(dir, { cache: null }), (err: Error) => {
      assert.ok(err.message.includes(join(dir, 'config.json')), err.message);
      assert.match(err.message, /a FIFO/);
      return true;
    });
    const tok = join(tmp, 'fifo-tokenizer');
    mkdirSync(tok);
    copyFileSync(join(ref, 'tiny-vit-p32', 'merges.txt'), join(tok, 'merges.txt'));
    spawnSync('mkfifo', [join(tok, 'vocab.json')]);
    const { ClipTokenizer } = await import('../src/clip/tokenizer.js');
    assert.throws(() => ClipTokenizer.fromFolder(tok), /vocab\.json: it is a FIFO/);
  });
});

describe('extra tensors, refused as pyiqa refuses them', () => {
  const clean = rewrite('tiny-vit-p32/openai.safetensors', 'liqe-clean.safetensors', (t) => prefixed(t, 'params.clip_model.'));
  const extra = rewrite('tiny-vit-p32/openai.safetensors', 'liqe-extra.safetensors', (t) => {
    const out = prefixed(t, 'params.clip_model.');
    out.set('params.clip_model.extra_weight', scalar(1));
    out.set('params.clip_model.visual.extra', scalar(2));
    // beside the CLIP in the same dict: refused as well; outside it (another top-level entry): not the CLIP's business
    out.set('params.head', scalar(3));
    out.set('optimizer.step', scalar(4));
    return out;
  });

  test('the loader lists the tensors the CLIP has no place for, by their names in the file', async () => {
    const w = await loadClipWeights(extra, { cache: null });
    assert.deepEqual([...w.extraTensors!].sort(), ['params.clip_model.extra_weight', 'params.clip_model.visual.extra', 'params.head']);
    assert.deepEqual((await loadClipWeights(clean, { cache: null })).extraTensors, []);
    // a whole layer past those the names count is extra too, not silently dropped
    const gap = rewrite('tiny-vit-p32/openai.safetensors', 'layer-gap.safetensors', (t) => {
      for (const k of [...t.keys()]) if (k.startsWith('visual.transformer.resblocks.0.')) t.set(k.replace('.0.', '.5.'), t.get(k)!);
    });
    assert.ok((await loadClipWeights(gap, { cache: null })).extraTensors!.includes('visual.transformer.resblocks.5.ln_1.weight'));
  });

  test('liqe --checkpoint with extra tensors is refused naming them; allowExtraTensors scores it as the clean file', async () => {
    const model = join(ref, 'tiny-vit-p32');
    await assert.rejects(createMetric('liqe', { checkpoint: extra, model, cache: false }), (err: Error) => {
      assert.ok(err.message.startsWith(`${extra}: 3 tensors`), err.message);
      assert.match(err.message, /"params\.clip_model\.extra_weight", "params\.clip_model\.visual\.extra", "params\.head"/);
      assert.match(err.message, /allowExtraTensors: true \(--allow-extra-tensors\)/);
      return true;
    });
    const want = await scoreOnce('liqe', { checkpoint: clean, model });
    assert.equal(await scoreOnce('liqe', { checkpoint: extra, model, allowExtraTensors: true }), want);
  });

  test("clip-iqa+'s released prompts in a dict: the prompt learner's own tensors pass, anything else beside them is refused", async () => {
    const ctx = readTorchTensors(join(ref, 'pyiqa', 'CLIP-IQA+_learned_prompts-tiny-rn.pth')).tensors.get('')!;
    const file = (name: string, more: Record<string, HostTensor>): string => {
      const path = join(tmp, name);
      const data = ctx.data instanceof Float32Array ? ctx.data : Float32Array.from(ctx.data, Number);
      writeSafetensors(path, { 'params.prompt_learner.ctx': { shape: ctx.shape, data }, ...more });
      return path;
    };
    const model = join(ref, 'tiny-rn', 'openai.safetensors');
    const ok = file('clipiqa-plus.safetensors', { 'params.prompt_learner.token_prefix': scalar(0), 'optimizer.x': scalar(0) });
    await (await createMetric('clip-iqa+', { checkpoint: ok, model, cache: false })).close();
    const bad = file('clipiqa-plus-extra.safetensors', { 'params.prompt_learner.extra': scalar(0), 'params.other': scalar(0) });
    await assert.rejects(createMetric('clip-iqa+', { checkpoint: bad, model, cache: false }), (err: Error) => {
      assert.ok(err.message.startsWith(`${bad}: 2 tensors`), err.message);
      assert.ok(err.message.includes('"params.prompt_learner.extra"') && err.message.includes('"params.other"'), err.message);
      return true;
    });
    await (await createMetric('clip-iqa+', { checkpoint: bad, model, cache: false, allowExtraTensors: true })).close();
  });
});

describe("LIQE's architecture, as pyiqa asserts it", () => {
  test('liqe --checkpoint holding a ResNet CLIP, or a ViT of another patch size, is refused naming what was found and what is expected', async () => {
    const rn = rewrite('tiny-rn/openai.safetensors', 'liqe-rn.safetensors', (t) => prefixed(t, 'params.clip_model.'));
    await assert.rejects(createMetric('liqe', { checkpoint: rn, cache: false }), (err: Error) => {
      assert.ok(err.message.startsWith(`${rn}: `), err.message);
      assert.match(err.message, /liqe \(as pyiqa's LIQE, which asserts it\) runs on ViT-B\/32 \(a ViT with 32-pixel patches at 224 px\)/);
      assert.match(err.message, /but this CLIP is a ResNet CLIP \(stages 2, 1, 1, 1/);
      return true;
    });
    const p16 = join(ref, 'tiny-vit-p16', 'model.safetensors');
    await assert.rejects(
      createMetric('liqe-mix', { checkpoint: p16, cache: false }),
      /runs on ViT-B\/32 .*but this CLIP is a ViT with 16-pixel patches at 224 px/,
    );
    // as a plain --model too: the method needs ViT-B/32's geometry whatever holds the weights
    await assert.rejects(createMetric('liqe', { model: join(ref, 'tiny-vit-p16'), cache: false }), /16-pixel patches/);
  });

  test("pyiqa's released CLIP-IQA+ prompts, under their released name, are for the CLIP the set-up names (RN50)", async () => {
    const prompts = join(tmp, 'CLIP-IQA+_learned_prompts-603f3273.pth');
    copyFileSync(join(ref, 'pyiqa', 'CLIP-IQA+_learned_prompts-tiny-rn.pth'), prompts);
    // the tiny ViT's text is as wide as the tiny ResNet's: only the name says which CLIP the prompts were learned on
    await assert.rejects(
      createMetric('clip-iqa+', { checkpoint: prompts, model: join(ref, 'tiny-vit-p32', 'openai.safetensors'), cache: false }),
      (err: Error) => {
        assert.ok(err.message.startsWith(`${prompts}: `), err.message);
        assert.match(
          err.message,
          /pyiqa's clipiqa\+ \(CLIP-IQA\+_learned_prompts-603f3273\.pth\) runs on RN50 \(a ResNet CLIP\), but this CLIP is a ViT/,
        );
        return true;
      },
    );
    await (
      await createMetric('clip-iqa+', { checkpoint: prompts, model: join(ref, 'tiny-rn', 'openai.safetensors'), cache: false })
    ).close();
  });
});
