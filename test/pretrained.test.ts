import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { sharedDir } from './helpers/shared.js';
import { cli } from './helpers/cli.js';
import { type FakeHub, type FakeHubOptions, type FakeRepo, sha256, startHub } from './helpers/fake-hub.js';
import { METHODS, createMetric, type MetricOptions } from '../src/methods/index.js';
import {
  PRETRAINED,
  PYIQA_WEIGHTS_REPO,
  checkHashPrefix,
  fetchPretrained,
  findPretrained,
  hashPrefixOf,
  type PretrainedFile,
} from '../src/methods/pretrained.js';
import { downloadFile, HubError, type HubOptions } from '../src/clip/hub.js';
import { readSafetensors, safetensorsBytes, writeSafetensors } from '../src/clip/safetensors.js';

// pyiqa's released files and the RN50 CLIP, stood in for by the tiny fixtures under their real names
const ref = join(sharedDir(), 'reference');
const images = join(ref, 'images');
const pyiqa = join(ref, 'pyiqa');
const expected = JSON.parse(readFileSync(join(pyiqa, 'expected.json'), 'utf8')) as {
  metrics: Record<string, { scores: Record<string, number | null> }>;
};
const read = (...p: string[]) => readFileSync(join(ref, ...p));
const PROMPTS = read('pyiqa', 'CLIP-IQA+_learned_prompts-tiny-rn.pth');
/** the prompts under a name that carries their own hash, as pyiqa's names carry the real files' */
const PROMPTS_OWN_NAME = `CLIP-IQA+_learned_prompts-${sha256(PROMPTS).slice(0, 8)}.pth`;
const RN50_COMMIT = 'a1'.repeat(20);
const VITL14_COMMIT = 'c3'.repeat(20);
const WEIGHTS_COMMIT = 'b2'.repeat(20);
/** the tiny ViT in the Hugging Face layout, standing in for openai/clip-vit-large-patch14 */
const TINY_VIT = new Map(
  readdirSync(join(ref, 'tiny-vit-p32'))
    .filter((f) => !['openai.safetensors', 'outputs.safetensors'].includes(f))
    .map((f) => [f, read('tiny-vit-p32', f)] as const),
);

const REPOS: Record<string, FakeRepo> = {
  // timm's CLIP repos carry timm's config.json and image-tower weights beside open_clip's files
  'timm/resnet50_clip.openai': {
    commit: RN50_COMMIT,
    files: new Map([
      ['config.json', Buffer.from(JSON.stringify({ architecture: 'resnet50_clip', num_classes: 1024, pretrained_cfg: {} }))],
      ['model.safetensors', Buffer.from('timm image tower: never to be read')],
      // as the real repo's (quick_gelu true: OpenAI's weights), with the tiny RN's sizes
      [
        'open_clip_config.json',
        Buffer.from(
          JSON.stringify({
            model_cfg: {
              quick_gelu: true,
              embed_dim: 64,
              vision_cfg: { image_size: 224, layers: [2, 1, 1, 1], width: 8, patch_size: null },
              text_cfg: { context_length: 77, vocab_size: 49408, width: 64, heads: 1, layers: 2 },
            },
            preprocess_cfg: { mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711] },
          }),
        ),
      ],
      ['open_clip_model.safetensors', read('tiny-rn', 'openai.safetensors')],
    ]),
  },
  'openai/clip-vit-large-patch14': { commit: VITL14_COMMIT, files: TINY_VIT },
  [PYIQA_WEIGHTS_REPO]: {
    commit: WEIGHTS_COMMIT,
    files: new Map([
      ['liqe_koniq.pt', read('pyiqa', 'liqe_koniq-tiny-vit-p32.pt')],
      ['liqe_mix.pt', read('pyiqa', 'liqe_mix-tiny-vit-p32.pt')],
      // not the released file: its sha256 does not start with 603f3273
      ['CLIP-IQA+_learned_prompts-603f3273.pth', PROMPTS],
      [PROMPTS_OWN_NAME, PROMPTS],
      ['CLIPIQA+_RN50_512-89f5d940.pth', read('pyiqa', 'CLIP-IQA+_learned_prompts-tiny-rn-csc.pth')],
      // the tiny ViT's text is as wide as the tiny ResNet's: the same prompts fit it
      ['CLIPIQA+_ViTL14_512-e66488f2.pth', PROMPTS],
    ]),
  },
};

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'promptiqa-pretrained-'));
  dirs.push(d);
  return d;
}

/** hub options that ignore the developer's HF_* environment */
function hubOptions(hub: { endpoint: string }, cacheDir: string, extra: HubOptions = {}): HubOptions {
  return { endpoint: hub.endpoint, cacheDir, token: '', offline: false, progress: false, retryDelayMs: 5, ...extra };
}

async function withHub<T>(fn: (hub: FakeHub) => Promise<T>, opts: FakeHubOptions = {}): Promise<T> {
  const hub = await startHub(REPOS, opts);
  try {
    return await fn(hub);
  } finally {
    await hub.close();
  }
}

async function scores(name: string, files: string[], opts: MetricOptions): Promise<Map<string, number>> {
  const m = await createMetric(name, { batchSize: 4, threads: 1, ...opts });
  try {
    const out = new Map<string, number>();
    for await (const r of m.scoreFiles(files.map((f) => join(images, f)))) {
      if ('error' in r) throw new Error(`${r.file}: ${r.error}`);
      out.set(basename(r.file), r.score);
    }
    return out;
  } finally {
    await m.close();
  }
}

function maxGap(got: Map<string, number>, want: Record<string, number | null>): number {
  let max = 0;
  for (const [f, s] of got) max = Math.max(max, Math.abs(s - want[f]!));
  return max;
}

test("the registry: pyiqa's names and files, each on a method that exists", () => {
  for (const p of PRETRAINED)
    assert.ok(
      METHODS.some((m) => m.info.name === p.method),
      `${p.name}: method ${p.method}`,
    );
  assert.deepEqual(
    PRETRAINED.map((p) => [p.name, p.pyiqa, p.released ?? null, p.clip ?? null]),
    [
      ['clip-iqa', 'clipiqa', null, 'timm/resnet50_clip.openai'],
      ['clip-iqa+', 'clipiqa+', 'CLIP-IQA+_learned_prompts-603f3273.pth', 'timm/resnet50_clip.openai'],
      ['clip-iqa+-rn50-512', 'clipiqa+_rn50_512', 'CLIPIQA+_RN50_512-89f5d940.pth', 'timm/resnet50_clip.openai'],
      ['clip-iqa+-vitl14-512', 'clipiqa+_vitL14_512', 'CLIPIQA+_ViTL14_512-e66488f2.pth', 'openai/clip-vit-large-patch14'],
      ['liqe', 'liqe', 'liqe_koniq.pt', null],
      ['liqe-mix', 'liqe_mix', 'liqe_mix.pt', null],
    ],
  );
  assert.equal(findPretrained('clip-iqa+-rn50-512')?.options.positionalEmbedding, 'interpolated');
  assert.equal(findPretrained('clip-iqa+-vitl14-512')?.options.positionalEmbedding, 'interpolated');
  assert.equal(hashPrefixOf('CLIPIQA+_ViTL14_512-e66488f2.pth'), 'e66488f2');
  assert.equal(hashPrefixOf('CLIP-IQA+_learned_prompts-603f3273.pth'), '603f3273');
  assert.equal(hashPrefixOf('CLIPIQA+_RN50_512-89f5d940.pth'), '89f5d940');
  assert.equal(hashPrefixOf('liqe_koniq.pt'), undefined);
});

test('liqe: the first run downloads the released file and scores as pyiqa; offline, the cache serves it', async (t) => {
  const cache = tempDir();
  const files = ['AttnGAN_normal_000.jpg', 'wide_640x480.png'];
  const origins: PretrainedFile[] = [];
  const online = await withHub(async (hub) => {
    const got = await scores('liqe', files, { hub: hubOptions(hub, cache), onFile: (f) => origins.push(f) });
    // LIQE's file holds the whole CLIP: nothing else is fetched
    assert.deepEqual(
      hub.requests.filter((r) => r.server === 'hub' && r.method === 'GET').map((r) => r.path),
      [`/${PYIQA_WEIGHTS_REPO}/resolve/${WEIGHTS_COMMIT}/liqe_koniq.pt`],
    );
    return got;
  });
  const gap = maxGap(online, expected.metrics.liqe!.scores);
  t.diagnostic(`liqe max |diff| against pyiqa: ${gap}`);
  assert.ok(gap <= 5e-4, `max |diff| ${gap}`);
  // negative control: the other released file's scores are far outside that tolerance
  assert.ok(maxGap(online, expected.metrics.liqe_mix!.scores) > 0.1);
  assert.deepEqual(
    origins.map((o) => [o.metric, o.role, o.repo, o.commit, basename(o.path)]),
    [['liqe', 'released', PYIQA_WEIGHTS_REPO, WEIGHTS_COMMIT, 'liqe_koniq.pt']],
  );
  assert.ok(origins[0]!.path.startsWith(cache));

  // the server is gone: offline, the same files come from the cache
  const again: PretrainedFile[] = [];
  const offline = await scores('liqe', files, {
    hub: hubOptions({ endpoint: 'http://127.0.0.1:9' }, cache, { offline: true }),
    onFile: (f) => again.push(f),
  });
  assert.deepEqual(offline, online);
  assert.deepEqual(again, origins);
});

test("clip-iqa: pyiqa's RN50 from an open_clip-only repo (timm layout), scored as pyiqa within 1e-4", async (t) => {
  const cache = tempDir();
  const files = ['AttnGAN_normal_000.jpg', 'tall_157x301.png'];
  const origins: PretrainedFile[] = [];
  const got = await withHub(async (hub) => {
    const s = await scores('clip-iqa', files, { hub: hubOptions(hub, cache), onFile: (f) => origins.push(f) });
    const asked = hub.requests.filter((r) => r.server === 'hub').map((r) => r.path.split('/').pop());
    assert.ok(asked.includes('config.json') && asked.includes('open_clip_model.safetensors'), asked.join(', '));
    // timm's own weights and a tokenizer the repo lacks are never asked for
    assert.ok(!asked.includes('model.safetensors') && !asked.includes('vocab.json'), asked.join(', '));
    return s;
  });
  const gap = maxGap(got, expected.metrics.clipiqa!.scores);
  t.diagnostic(`clip-iqa max |diff| against pyiqa: ${gap}`);
  assert.ok(gap <= 1e-4, `max |diff| ${gap}`);
  assert.deepEqual(
    origins.map((o) => [o.role, o.repo, o.commit, basename(o.path), basename(dirname(o.path))]),
    [['clip', 'timm/resnet50_clip.openai', RN50_COMMIT, 'open_clip_model.safetensors', RN50_COMMIT]],
  );
});

test("clip-iqa+: a released file whose sha256 does not start with its name's hash is refused, naming both; the cache keeps it", async () => {
  const cache = tempDir();
  await withHub(async (hub) => {
    await assert.rejects(createMetric('clip-iqa+', { hub: hubOptions(hub, cache) }), (err: Error) => {
      assert.match(err.message, /CLIP-IQA\+_learned_prompts-603f3273\.pth/);
      assert.match(err.message, new RegExp(`sha256 is ${sha256(PROMPTS)}`));
      assert.match(err.message, /starts with 603f3273/);
      return true;
    });
  });
  const kept = join(cache, `models--chaofengc--IQA-PyTorch-Weights`, 'snapshots', WEIGHTS_COMMIT, 'CLIP-IQA+_learned_prompts-603f3273.pth');
  assert.ok(existsSync(kept), 'nothing of the cache is deleted');
});

test("the name's hash check passes a file that is what its name says (served, downloaded, checked), and scores as pyiqa", async (t) => {
  const cache = tempDir();
  await withHub(async (hub) => {
    const path = await downloadFile(PYIQA_WEIGHTS_REPO, PROMPTS_OWN_NAME, hubOptions(hub, cache));
    await checkHashPrefix(path, PROMPTS_OWN_NAME);
    // the released prompts on the RN50 of the open_clip repo: the clip-iqa+ set-up, under a name the check accepts
    const clip = (await fetchPretrained(findPretrained('clip-iqa')!, hubOptions(hub, cache))).clip!;
    const got = await scores('clip-iqa+', ['AttnGAN_normal_000.jpg'], { model: clip, checkpoint: path });
    const gap = maxGap(got, expected.metrics['clipiqa+']!.scores);
    t.diagnostic(`clip-iqa+ max |diff| against pyiqa: ${gap}`);
    assert.ok(gap <= 1e-4, `max |diff| ${gap}`);
  });
});

test('clip-iqa+-vitl14-512: the released prompts on the ViT at full resolution, its positional embedding resized, scored as pyiqa within 1e-4', async (t) => {
  // pyiqa's scores with the tiny ViT and prompts standing in (how they were made: test/clip-vit-fullres.test.ts)
  const fixture = JSON.parse(readFileSync(new URL('fixtures/pyiqa-vit-full.json', import.meta.url), 'utf8')) as {
    clipiqa_plus_vitl14_512: { scores: Record<string, number>; scores_nopos: Record<string, number> };
  };
  const want = fixture.clipiqa_plus_vitl14_512;
  const p = findPretrained('clip-iqa+-vitl14-512')!;
  const cache = tempDir();
  await withHub(async (hub) => {
    // the registry's CLIP and options, the prompts under a name whose hash they match
    const clip = (await fetchPretrained({ ...p, released: undefined }, hubOptions(hub, cache))).clip!;
    assert.equal(basename(clip), VITL14_COMMIT);
    const prompts = await downloadFile(PYIQA_WEIGHTS_REPO, PROMPTS_OWN_NAME, hubOptions(hub, cache));
    const got = await scores(p.method, Object.keys(want.scores), { model: clip, checkpoint: prompts, methodOptions: { ...p.options } });
    const gap = maxGap(got, want.scores);
    t.diagnostic(`clip-iqa+-vitl14-512 max |diff| against pyiqa: ${gap}`);
    assert.ok(gap <= 1e-4, `max |diff| ${gap}`);
    // negative control: without the positional embedding (pyiqa's clip-iqa+ default) the scores are far off
    assert.ok(maxGap(got, want.scores_nopos) > 0.1);
  });
});

test('every named metric downloads from the hub it is pointed at: its files and their origins, or a refusal naming the hash', async () => {
  const cache = tempDir();
  await withHub(async (hub) => {
    for (const p of PRETRAINED) {
      const origins: PretrainedFile[] = [];
      const fetching = fetchPretrained(p, hubOptions(hub, cache), (f) => origins.push(f));
      const prefix = p.released === undefined ? undefined : hashPrefixOf(p.released);
      if (prefix !== undefined) {
        // the fixtures stand in for pyiqa's files, so the hash their real names carry cannot match
        await assert.rejects(fetching, new RegExp(`${p.released!.replace(/[.+]/g, '\\$&')} says it starts with ${prefix}`), p.name);
        continue;
      }
      const paths = await fetching;
      const want: Array<[string, string, string]> = [];
      if (p.clip) want.push(['clip', p.clip, p.clip === 'openai/clip-vit-large-patch14' ? VITL14_COMMIT : RN50_COMMIT]);
      if (p.released) want.push(['released', PYIQA_WEIGHTS_REPO, WEIGHTS_COMMIT]);
      assert.deepEqual(
        origins.map((o) => [o.role, o.repo, o.commit]),
        want,
        p.name,
      );
      assert.equal(paths.released === undefined ? undefined : basename(paths.released), p.released, p.name);
    }
  });
  // liqe-mix scores as pyiqa's liqe_mix from what was fetched (offline now)
  const got = await scores('liqe-mix', ['sd1.5_lowstep_050.jpg'], {
    hub: hubOptions({ endpoint: 'http://127.0.0.1:9' }, cache, { offline: true }),
  });
  assert.ok(maxGap(got, expected.metrics.liqe_mix!.scores) <= 5e-4, `max |diff| ${maxGap(got, expected.metrics.liqe_mix!.scores)}`);
});

test('a corrupted download (LFS sha256 mismatch) is refused by name and leaves no blob', async () => {
  const cache = tempDir();
  await withHub(
    async (hub) => {
      await assert.rejects(createMetric('liqe-mix', { hub: hubOptions(hub, cache) }), (err: unknown) => {
        assert.ok(err instanceof HubError);
        assert.equal(err.code, 'HashMismatch');
        assert.match(err.message, /chaofengc\/IQA-PyTorch-Weights\/liqe_mix\.pt is corrupt/);
        return true;
      });
    },
    { corrupt: 'liqe_mix.pt' },
  );
  assert.ok(!existsSync(join(cache, 'models--chaofengc--IQA-PyTorch-Weights', 'snapshots', WEIGHTS_COMMIT, 'liqe_mix.pt')));
});

test('an unknown name lists the methods and the pretrained metrics; a pretrained-only name with a model names its method', async () => {
  await assert.rejects(
    createMetric('liqe-koniq'),
    /unknown method "liqe-koniq".*clip-iqa.*pretrained \(without a model or checkpoint\): clip-iqa, clip-iqa\+, clip-iqa\+-rn50-512/,
  );
  await assert.rejects(
    createMetric('clip-iqa+-rn50-512', { model: join(ref, 'tiny-rn', 'openai.safetensors') }),
    /pretrained clip-iqa\+.*use method "clip-iqa\+"/,
  );
  const r = await cli('score', join(images, 'AttnGAN_normal_000.jpg'), '--method', 'liqe-koniq');
  assert.equal(r.code, 2);
  assert.match(r.err, /unknown method "liqe-koniq".*pretrained \(without a model or checkpoint\): clip-iqa/);
});

test('through a mirror (HF_ENDPOINT): download --metric fetches, then score --method liqe works offline and says where each file came from', async () => {
  const cache = tempDir();
  const keys = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME', 'HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_HUB_DISABLE_PROGRESS_BARS'] as const;
  const saved = keys.map((k) => process.env[k]);
  try {
    await withHub(async (hub) => {
      Object.assign(process.env, {
        HF_ENDPOINT: hub.endpoint,
        HF_HUB_CACHE: cache,
        HF_HOME: cache,
        HF_TOKEN: '',
        HF_HUB_DISABLE_PROGRESS_BARS: '1',
      });
      delete process.env.HF_HUB_OFFLINE;
      const d = await cli('download', '--metric', 'liqe', '--json');
      assert.equal(d.code, 0, d.err);
      const got = JSON.parse(d.out) as { metric: string; files: Array<{ role: string; repo: string; commit: string; path: string }> };
      assert.equal(got.metric, 'liqe');
      assert.deepEqual(
        got.files.map((f) => [f.role, f.repo, f.commit]),
        [['released', PYIQA_WEIGHTS_REPO, WEIGHTS_COMMIT]],
      );
      assert.ok(hub.requests.length > 0, 'the mirror was asked');
    });
    process.env.HF_HUB_OFFLINE = '1';
    const s = await cli('score', join(images, 'grey_640x480.png'), '--method', 'liqe', '--format', 'json', '--threads', '1');
    assert.equal(s.code, 0, s.err);
    assert.match(s.err, /liqe: released weights from chaofengc\/IQA-PyTorch-Weights at b2b2b2\S* → \S*liqe_koniq\.pt/);
    const [rec] = JSON.parse(s.out) as Array<{ score: number }>;
    assert.ok(Math.abs(rec!.score - expected.metrics.liqe!.scores['grey_640x480.png']!) <= 5e-4);
    const quiet = await cli('score', join(images, 'grey_640x480.png'), '--method', 'liqe', '--format', 'json', '--quiet');
    assert.equal(quiet.err, '');
  } finally {
    keys.forEach((k, i) => {
      if (saved[i] === undefined) delete process.env[k];
      else process.env[k] = saved[i];
    });
  }
});

test("a pretrained set-up's CLIP is checked as pyiqa loads it: the architecture it names, and no tensor that CLIP lacks", async () => {
  const rn = readSafetensors(join(ref, 'tiny-rn', 'openai.safetensors')).tensors;
  const withExtra = Buffer.concat(
    safetensorsBytes({ ...Object.fromEntries(rn), 'visual.extra': { shape: [1], data: Float32Array.from([1]) } }),
  );
  const vit = read('tiny-vit-p32', 'openai.safetensors');
  // the repo's open_clip config describes RN50: a ViT is served without it, so that the architecture check (not
  // the config's) is what refuses it
  const serving = (file: Buffer, config = true): Record<string, FakeRepo> => ({
    ...REPOS,
    'timm/resnet50_clip.openai': {
      commit: RN50_COMMIT,
      files: new Map([
        ...[...REPOS['timm/resnet50_clip.openai']!.files].filter(([name]) => config || name !== 'open_clip_config.json'),
        ['open_clip_model.safetensors', file],
      ]),
    },
  });
  const files = ['AttnGAN_normal_000.jpg'];
  const run = async (file: Buffer, opts: MetricOptions = {}, config = true): Promise<Map<string, number>> => {
    const hub = await startHub(serving(file, config));
    try {
      return await scores('clip-iqa', files, { hub: hubOptions(hub, tempDir()), ...opts });
    } finally {
      await hub.close();
    }
  };
  await assert.rejects(run(withExtra), (err: Error) => {
    assert.match(err.message, /open_clip_model\.safetensors: a tensor that RN50 CLIP does not have: "visual\.extra"/);
    assert.match(err.message, /--allow-extra-tensors/);
    return true;
  });
  // allowed on purpose, the extra tensor changes nothing
  const allowed = await run(withExtra, { allowExtraTensors: true });
  assert.ok(maxGap(allowed, expected.metrics.clipiqa!.scores) <= 1e-4);
  await assert.rejects(
    run(vit, {}, false),
    /pyiqa's clipiqa runs on RN50 \(a ResNet CLIP\), but this CLIP is a ViT with 32-pixel patches at 224 px/,
  );
});

test('score --allow-extra-tensors: a released file with extra tensors is refused by name (exit 1), accepted with the flag', async () => {
  const dir = tempDir();
  const file = join(dir, 'liqe-custom.safetensors');
  const t = readSafetensors(join(ref, 'tiny-vit-p32', 'openai.safetensors')).tensors;
  writeSafetensors(file, {
    ...Object.fromEntries([...t].map(([k, v]) => [`params.clip_model.${k}`, v])),
    'params.clip_model.visual.extra': { shape: [1], data: Float32Array.from([0]) },
  });
  const img = join(images, 'grey_640x480.png');
  const refused = await cli('score', img, '--method', 'liqe', '--checkpoint', file, '--no-cache', '--quiet');
  assert.equal(refused.code, 1, refused.err);
  assert.match(refused.err, /"params\.clip_model\.visual\.extra".*--allow-extra-tensors/);
  const ok = await cli(
    'score',
    img,
    '--method',
    'liqe',
    '--checkpoint',
    file,
    '--allow-extra-tensors',
    '--no-cache',
    '--quiet',
    '--format',
    'json',
    '--threads',
    '1',
  );
  assert.equal(ok.code, 0, ok.err);
  const [rec] = JSON.parse(ok.out) as Array<{ score: number }>;
  assert.ok(Number.isFinite(rec!.score));
  // eval takes the same flag
  const names = ['AttnGAN_normal_000.jpg', 'midjourney_normal_105.jpg', 'sd1.5_lowstep_050.jpg', 'wide_640x480.png'];
  for (const n of names) copyFileSync(join(images, n), join(dir, n));
  writeFileSync(join(dir, 'labels.csv'), `image,mos\n${names.map((n, i) => `${n},${i + 1}`).join('\n')}\n`);
  const evalArgs = ['eval', '--method', 'liqe', '--checkpoint', file, '--dataset', 'csv', '--root', dir, '--label-file', 'labels.csv'];
  const evalRefused = await cli(...evalArgs, '--out', join(dir, 'eval-refused'), '--no-cache', '--quiet');
  assert.equal(evalRefused.code, 1, evalRefused.err);
  assert.match(evalRefused.err, /"params\.clip_model\.visual\.extra".*--allow-extra-tensors/);
  const evalOk = await cli(...evalArgs, '--out', join(dir, 'eval'), '--allow-extra-tensors', '--no-cache', '--quiet', '--threads', '1');
  assert.equal(evalOk.code, 0, evalOk.err);
});
