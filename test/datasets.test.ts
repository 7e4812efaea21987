import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DatasetError,
  imagePath,
  listDatasets,
  loadDataset,
  type Dataset,
  type DatasetItem,
  type LoadOptions,
} from '../src/data/datasets.js';
import { flagName } from '../src/cli/options.js';
import { READ_LIMITS } from '../src/util/fs.js';
import { splitDataset, splitRounds, type Split, type SplitSpec } from '../src/data/splits.js';
import { sharedDir } from './helpers/shared.js';
import { cli } from './helpers/cli.js';

const labels = (file: string): string => join(sharedDir(), 'datasets', 'labels', file);
const agiqa3kRoot = (): string => join(sharedDir(), 'datasets', 'agiqa-3k');

/** Loads a label-only dataset from shared (no images there). */
function fromShared(name: string, file: string, target?: string): Dataset {
  return loadDataset(name, { root: tmpdir(), labelFile: labels(file), checkImages: false, ...(target ? { target } : {}) });
}

function range(items: readonly DatasetItem[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const it of items) [lo, hi] = [Math.min(lo, it.mos), Math.max(hi, it.mos)];
  return [lo, hi];
}

const count = <T>(values: Iterable<T>): number => new Set(values).size;

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'promptiqa-datasets-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A fresh folder under the test's temp dir with the given files (content '' for images). */
function makeRoot(name: string, files: Record<string, string>): string {
  const root = join(tmp, name);
  mkdirSync(root, { recursive: true });
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(join(root, path, '..'), { recursive: true });
    writeFileSync(join(root, path), content);
  }
  return root;
}

describe('registry', () => {
  test('listDatasets lists every dataset with a consistent description', () => {
    const infos = listDatasets();
    assert.deepEqual(
      infos.map((i) => i.name),
      [
        'agiqa-3k',
        'agiqa-1k',
        'aigciqa2023',
        'pku-aigiqa-4k',
        'csiq',
        'kadid-10k',
        'live',
        'tid2013',
        'koniq-10k',
        'spaq',
        'live-challenge',
        'csv',
      ],
    );
    for (const info of infos) {
      assert.equal(info.targets[0], 'quality', info.name);
      assert.ok(info.mosRange[0] < info.mosRange[1], info.name);
      assert.ok(info.howToGet.length > 20 && !info.howToGet.includes('\n'), info.name);
      assert.ok(info.labelFile.endsWith('.csv'), info.name);
    }
    const byName = new Map(infos.map((i) => [i.name, i]));
    assert.equal(byName.get('pku-aigiqa-4k')!.labelFile, 'pku-aigiqa.csv');
    assert.deepEqual(byName.get('agiqa-3k')!.targets, ['quality', 'alignment']);
    assert.deepEqual(byName.get('aigciqa2023')!.targets, ['quality', 'authenticity', 'correspondence']);
    // DMOS sets are lower-better; KADID's 'dmos' column is in fact higher-better.
    assert.equal(byName.get('csiq')!.higherIsBetter, false);
    assert.equal(byName.get('live')!.higherIsBetter, false);
    assert.equal(byName.get('kadid-10k')!.higherIsBetter, true);
    assert.equal(byName.get('tid2013')!.groupBy, 'reference');
    assert.equal(byName.get('koniq-10k')!.groupBy, 'image');
    // The registry hands out copies.
    infos[0]!.mosRange[1] = 99;
    assert.equal(listDatasets()[0]!.mosRange[1], 5);
  });

  test('unknown dataset and unknown target are DatasetErrors that list the choices', () => {
    assert.throws(
      () => loadDataset('agiqa-9k', { root: tmp }),
      (e: Error) => e instanceof DatasetError && /known: agiqa-3k/.test(e.message),
    );
    assert.throws(
      () => loadDataset('agiqa-3k', { root: agiqa3kRoot(), target: 'aesthetics' }),
      (e: Error) => e instanceof DatasetError && /quality, alignment/.test(e.message),
    );
  });

  test('a missing label file says where it looked', () => {
    assert.throws(
      () => loadDataset('tid2013', { root: join(tmp, 'nowhere') }),
      (e: Error) => e instanceof DatasetError && e.message.includes(join(tmp, 'nowhere', 'tid2013.csv')),
    );
  });
});

describe('label files in shared', () => {
  test('AGIQA-3K: 2,982 images found, 300 prompts, quality and alignment on 0–5', () => {
    const ds = loadDataset('agiqa-3k', { root: agiqa3kRoot() }); // checks every image exists
    assert.equal(ds.items.length, 2982);
    assert.equal(count(ds.items.map((i) => i.group)), 300);
    assert.ok(
      ds.items.every((i) => i.prompt && i.image.startsWith('images/') && i.extra?.alignment !== undefined && i.extra.std !== undefined),
    );
    const [lo, hi] = range(ds.items);
    assert.ok(lo >= 0 && hi <= 5 && Math.abs(hi - 4.489) < 1e-3, `${lo} ${hi}`);
    const first = ds.items[0]!;
    assert.deepEqual(first, {
      image: 'images/AttnGAN_normal_000.jpg',
      mos: 0.965602553,
      prompt: 'statue of a man',
      group: 'statue of a man',
      extra: { std: 0.223270101, alignment: 0.40889324, std_alignment: 0.615607722 },
    });
    assert.equal(imagePath(ds, first), join(agiqa3kRoot(), 'images', 'AttnGAN_normal_000.jpg'));

    const align = loadDataset('agiqa-3k', { root: agiqa3kRoot(), target: 'alignment', checkImages: false });
    assert.equal(align.target, 'alignment');
    assert.equal(align.items[0]!.mos, 0.40889324);
    assert.equal(align.items[0]!.extra!.quality, 0.965602553);
    assert.equal(align.items[0]!.extra!.std, 0.615607722);
    const [alo, ahi] = range(align.items);
    assert.ok(alo > 0.02 && ahi < 4.3);
  });

  // rows = items after parsing; groups = split units; lo/hi = observed quality range.
  const cases: Array<{
    name: string;
    file: string;
    rows: number;
    groups: number;
    lo: number;
    hi: number;
    targets: string[];
    distortions?: number;
    higherIsBetter: boolean;
  }> = [
    { name: 'agiqa-1k', file: 'agiqa-1k.csv', rows: 1078, groups: 720, lo: 0, hi: 5, targets: ['quality'], higherIsBetter: true },
    {
      name: 'aigciqa2023',
      file: 'aigciqa2023.csv',
      rows: 2400,
      groups: 100,
      lo: 1.3314,
      hi: 3.6055,
      targets: ['quality', 'authenticity', 'correspondence'],
      higherIsBetter: true,
    },
    {
      name: 'pku-aigiqa-4k',
      file: 'pku-aigiqa.csv',
      rows: 2400,
      groups: 199,
      lo: 0.9713,
      hi: 4.173,
      targets: ['quality', 'authenticity', 'correspondence', 'overall'],
      higherIsBetter: true,
    },
    { name: 'csiq', file: 'csiq.csv', rows: 866, groups: 30, lo: 0, hi: 1, targets: ['quality'], distortions: 6, higherIsBetter: false },
    {
      name: 'kadid-10k',
      file: 'kadid-10k.csv',
      rows: 10125,
      groups: 81,
      lo: 1,
      hi: 4.93,
      targets: ['quality'],
      distortions: 25,
      higherIsBetter: true,
    },
    {
      name: 'live',
      file: 'live.csv',
      rows: 779,
      groups: 29,
      lo: 17.9024,
      hi: 84.489,
      targets: ['quality'],
      distortions: 5,
      higherIsBetter: false,
    },
    {
      name: 'tid2013',
      file: 'tid2013.csv',
      rows: 3000,
      groups: 25,
      lo: 0.24242,
      hi: 7.21429,
      targets: ['quality'],
      distortions: 24,
      higherIsBetter: true,
    },
    {
      name: 'koniq-10k',
      file: 'koniq-10k.csv',
      rows: 10073,
      groups: 10073,
      lo: 3.9118,
      hi: 88.3889,
      targets: ['quality'],
      higherIsBetter: true,
    },
    {
      name: 'spaq',
      file: 'spaq.csv',
      rows: 11125,
      groups: 11125,
      lo: 2,
      hi: 96,
      targets: ['quality', 'brightness', 'colorfulness', 'contrast', 'noisiness', 'sharpness'],
      higherIsBetter: true,
    },
  ];
  for (const c of cases) {
    test(`${c.name}: ${c.rows} items, ${c.groups} groups, MOS ${c.lo}–${c.hi}`, () => {
      const ds = fromShared(c.name, c.file);
      assert.equal(ds.items.length, c.rows);
      assert.equal(count(ds.items.map((i) => i.group)), c.groups);
      const [lo, hi] = range(ds.items);
      assert.ok(Math.abs(lo - c.lo) < 1e-3 && Math.abs(hi - c.hi) < 1e-3, `range ${lo}–${hi}`);
      assert.ok(lo >= ds.info.mosRange[0] && hi <= ds.info.mosRange[1]);
      assert.deepEqual(ds.info.targets, c.targets);
      assert.equal(ds.info.higherIsBetter, c.higherIsBetter);
      assert.ok(ds.items.every((i) => Number.isFinite(i.mos) && i.image.length > 0 && !i.image.includes('\\')));
      if (c.distortions !== undefined) assert.equal(count(ds.items.map((i) => i.distortion)), c.distortions);
      if (ds.info.kind === 'aigc') assert.ok(ds.items.every((i) => i.prompt && i.prompt.length > 0));
      // Every other target of the set is carried along in extra.
      for (const other of c.targets.slice(1))
        assert.ok(
          ds.items.every((i) => Number.isFinite(i.extra?.[other])),
          other,
        );
      for (const target of c.targets.slice(1)) {
        const t = fromShared(c.name, c.file, target);
        assert.equal(t.items.length, c.rows);
        assert.equal(t.items[0]!.mos, ds.items[0]!.extra![target]);
      }
    });
  }

  test('AGIQA-1K: the image listed twice with different scores is left out and reported', () => {
    const ds = fromShared('agiqa-1k', 'agiqa-1k.csv');
    assert.equal(ds.warnings?.length, 1);
    assert.match(ds.warnings[0]!, /dreamStudio_8_9_1_1\.jpg is listed 2 times .*lines 1080, 1081/);
    assert.ok(!ds.items.some((i) => i.image.endsWith('dreamStudio_8_9_1_1.jpg')));
  });

  test('AIGCIQA2023: model folders and prompts without their literal quotes', () => {
    const ds = fromShared('aigciqa2023', 'aigciqa2023.csv');
    assert.equal(ds.items[0]!.image, 'Image/Lafite/042-2.png');
    assert.equal(ds.items[0]!.prompt, 'A bicycle on top of a boat');
    assert.equal(count(ds.items.map((i) => i.image)), 2400);
    // Each prompt: 6 models × 4 images.
    const sizes = new Map<string, number>();
    for (const it of ds.items) sizes.set(it.group, (sizes.get(it.group) ?? 0) + 1);
    assert.deepEqual([...new Set(sizes.values())], [24]);
  });

  test('synthetic sets: reference groups, distortion names and levels', () => {
    const tid = fromShared('tid2013', 'tid2013.csv');
    // 'I01.BMP' and 'i25.bmp' are case variants of the same naming: groups are case-folded.
    assert.deepEqual([...new Set(tid.items.map((i) => i.group))].slice(0, 2), ['i01', 'i02']);
    assert.ok(tid.items.every((i) => /^i\d\d$/.test(i.group)));
    assert.deepEqual(tid.items[0]!.extra, { level: 1, std: 0.13013 });
    assert.equal(tid.items.find((i) => i.image.endsWith('_10_1.bmp'))!.distortion, 'jpeg compression');
    const kadid = fromShared('kadid-10k', 'kadid-10k.csv');
    assert.equal(kadid.items.find((i) => i.image === 'images/I01_10_03.png')!.distortion, 'jpeg');
    const csiq = fromShared('csiq', 'csiq.csv');
    assert.equal(csiq.items[0]!.image, 'dst_imgs/awgn/1600.AWGN.1.png');
    assert.equal(csiq.items[0]!.group, '1600');
    const live = fromShared('live', 'live.csv');
    assert.deepEqual([...new Set(live.items.map((i) => i.distortion))].sort(), [
      'fast fading',
      'gaussian blur',
      'jpeg',
      'jpeg2000',
      'white noise',
    ]);
    assert.equal(live.items[0]!.group, 'studentsculpture');
  });

  test('KonIQ-10k: the official split column', () => {
    const ds = fromShared('koniq-10k', 'koniq-10k.csv');
    const n = (s: string): number => ds.items.filter((i) => i.split === s).length;
    assert.deepEqual([n('train'), n('val'), n('test')], [7058, 1000, 2015]);
    assert.ok(ds.items.every((i) => i.extra?.std !== undefined));
  });

  test('SPAQ: scene shares in extra, a scene label only without a tie', () => {
    const ds = fromShared('spaq', 'spaq.csv');
    const first = ds.items[0]!; // three scenes at 1/3
    assert.equal(first.scene, undefined);
    assert.equal(first.extra!['scene:night scene'], 0.333333);
    assert.equal(first.extra!.brightness, 47.43); // the rating, not the EXIF 'Brightness' column after it
    assert.equal(ds.items[2]!.scene, 'landscape');
    assert.equal(ds.items.filter((i) => i.scene === undefined).length, 2771);
  });
});

describe('image checks and malformed rows', () => {
  test('missing images: one error with the count, the first 20 names and the root', () => {
    const names = Array.from({ length: 25 }, (_, i) => `img_${String(i).padStart(2, '0')}.jpg`);
    const csv = 'name,prompt,mos_quality,mos_align\n' + names.map((n, i) => `${n},prompt ${i % 5},${(i % 5) + 0.5},2\n`).join('');
    const root = makeRoot('missing', { 'data.csv': csv, 'images/img_00.jpg': '', 'images/img_01.jpg': '' });
    assert.throws(
      () => loadDataset('agiqa-3k', { root }),
      (e: Error) => {
        assert.ok(e instanceof DatasetError);
        assert.match(e.message, /23 of 25 images/);
        assert.ok(e.message.includes(root));
        assert.ok(e.message.includes('images/img_02.jpg') && e.message.includes('images/img_21.jpg'));
        assert.ok(!e.message.includes('images/img_22.jpg'), 'only the first 20 are listed');
        assert.match(e.message, /and 3 more/);
        assert.ok(!e.message.includes('images/img_00.jpg'));
        return true;
      },
    );
    // The labels alone load without the images.
    assert.equal(loadDataset('agiqa-3k', { root, checkImages: false }).items.length, 25);
  });

  test('an image whose name differs only in case is found and its path corrected', () => {
    const root = makeRoot('case', {
      'tid2013.csv': 'ref_name,dist_name,mos,std\nI01.BMP,I01_11_1.BMP,5.1,0.1\ni01.bmp,i01_01_2.bmp,4.2,0.2\n',
      'distorted_images/i01_11_1.bmp': '',
      'distorted_images/i01_01_2.bmp': '',
    });
    const ds = loadDataset('tid2013', { root });
    assert.deepEqual(
      ds.items.map((i) => i.image),
      ['distorted_images/i01_11_1.bmp', 'distorted_images/i01_01_2.bmp'],
    );
    assert.deepEqual(
      ds.items.map((i) => i.group),
      ['i01', 'i01'],
    );
  });

  const malformed: Array<[string, string, RegExp]> = [
    [
      'a non-numeric MOS',
      'name,prompt,mos_quality\na.jpg,p,1.5\nb.jpg,p,abc\n',
      /data\.csv:3: 'mos_quality' is "abc", not a finite number/,
    ],
    ['an empty MOS', 'name,prompt,mos_quality\na.jpg,p,1.5\nb.jpg,p,2\nc.jpg,p,\n', /data\.csv:4: empty 'mos_quality' field/],
    ['an empty image name', 'name,prompt,mos_quality\n,p,1.5\n', /data\.csv:2: empty 'name' field/],
    ['a missing field', 'name,prompt,mos_quality\na.jpg,p,1.5\nb.jpg,2\n', /data\.csv:3: expected 3 fields/],
    // The quoted line break and the blank line shift lines against rows: the line must still be right.
    [
      'a bad row after a multi-line prompt',
      'name,prompt,mos_quality\na.jpg,"two\nlines",1.5\n\nb.jpg,p,1e\n',
      /data\.csv:5: 'mos_quality' is "1e"/,
    ],
    [
      'a MOS outside the scale',
      'name,prompt,mos_quality\na.jpg,p,55\n',
      /data\.csv:2: 'mos_quality' is 55, outside agiqa-3k's quality scale \[0, 5\]/,
    ],
    ['a missing column', 'name,text,mos_quality\na.jpg,p,1\n', /missing column 'prompt' \(the header has 'name', 'text', 'mos_quality'\)/],
  ];
  for (const [what, csv, pattern] of malformed) {
    test(`${what} is a DatasetError that points at it`, () => {
      const root = makeRoot(`bad-${what.replace(/\W+/g, '-')}`, { 'data.csv': csv });
      assert.throws(
        () => loadDataset('agiqa-3k', { root, checkImages: false }),
        (e: Error) => e instanceof DatasetError && pattern.test(e.message),
      );
    });
  }

  test('generic csv with custom columns, grouped by prompt, range from the data', () => {
    const root = makeRoot('generic', {
      'scores.csv': 'file,score,text,other\r\nsub/a.png,3,"a cat, sitting",x\r\nsub/b.png,7,"A  cat,  sitting",y\r\nc.png,5,a dog,z\r\n',
      'sub/a.png': '',
      'sub/b.png': '',
      'c.png': '',
    });
    const ds = loadDataset('csv', { root, labelFile: 'scores.csv', imageCol: 'file', mosCol: 'score', promptCol: 'text' });
    assert.deepEqual(
      ds.items.map((i) => [i.image, i.mos, i.prompt]),
      [
        ['sub/a.png', 3, 'a cat, sitting'],
        ['sub/b.png', 7, 'A  cat,  sitting'],
        ['c.png', 5, 'a dog'],
      ],
    );
    // Prompts differing in case and spacing form one group.
    assert.equal(count(ds.items.map((i) => i.group)), 2);
    assert.deepEqual(ds.info.mosRange, [3, 7]);
    assert.equal(ds.info.groupBy, 'prompt');
    assert.equal(ds.info.kind, 'aigc');

    const plain = loadDataset('csv', {
      root,
      labelFile: 'scores.csv',
      imageCol: 'file',
      mosCol: 'score',
      mosRange: [0, 10],
      higherIsBetter: false,
    });
    assert.equal(plain.info.groupBy, 'image');
    assert.deepEqual(
      plain.items.map((i) => i.group),
      ['sub/a.png', 'sub/b.png', 'c.png'],
    );
    assert.deepEqual(plain.info.mosRange, [0, 10]);
    assert.equal(plain.info.higherIsBetter, false);
    assert.throws(() => loadDataset('csv', { root, labelFile: 'scores.csv' }), /missing columns 'image', 'mos'/);
    assert.throws(
      () => loadDataset('csv', { root, labelFile: 'scores.csv', imageCol: 'file', mosCol: 'score', mosRange: [0, 5] }),
      /scores\.csv:3: 'score' is 7, outside the given range \[0, 5\]/,
    );
  });

  test('live-challenge: img_name,mos,std with BMP and JPEG images under Images/', () => {
    const root = makeRoot('livec', {
      'live-challenge.csv':
        'img_name,mos,std\nt1.bmp,63.96,18.37\nt7.bmp,77.88,19.64\n100.bmp,32.56,19.12\n10.bmp,82.91,15.12\n1001.JPG,45.5,20.1\n',
      'Images/100.bmp': '',
      'Images/10.bmp': '',
      'Images/1001.JPG': '',
    });
    const ds = loadDataset('live-challenge', { root });
    // t1–t7 (the raters' training images) are not part of the evaluated set.
    assert.deepEqual(
      ds.items.map((i) => i.image),
      ['Images/100.bmp', 'Images/10.bmp', 'Images/1001.JPG'],
    );
    assert.deepEqual(
      ds.items.map((i) => i.mos),
      [32.56, 82.91, 45.5],
    );
    assert.deepEqual(ds.items[2]!.extra, { std: 20.1 });
    assert.equal(ds.items[2]!.group, 'Images/1001.JPG');
    assert.deepEqual(ds.info.mosRange, [0, 100]);
    assert.equal(ds.info.kind, 'authentic');
  });
});

describe('splits', () => {
  const agiqa = (): DatasetItem[] => loadDataset('agiqa-3k', { root: agiqa3kRoot(), checkImages: false }).items;

  function assertPartition(split: Split, n: number): void {
    const all = [...split.train, ...split.val, ...split.test];
    assert.equal(all.length, n);
    assert.deepEqual(
      [...all].sort((a, b) => a - b),
      Array.from({ length: n }, (_, i) => i),
    );
    for (const side of [split.train, split.val, split.test]) {
      assert.deepEqual(
        side,
        [...side].sort((a, b) => a - b),
        'sorted',
      );
    }
  }

  test('by group: every index exactly once, no group on two sides, sizes within one group', () => {
    const items = agiqa();
    const spec: SplitSpec = { seed: 42, ratios: [0.7, 0.1, 0.2], by: 'group' };
    const split = splitDataset(items, spec);
    assertPartition(split, items.length);
    const sideOf = new Map<string, string>();
    for (const [name, side] of Object.entries(split)) {
      for (const i of side as number[]) {
        const g = items[i]!.group;
        assert.ok((sideOf.get(g) ?? name) === name, `group ${g} on two sides`);
        sideOf.set(g, name);
      }
    }
    const largest = Math.max(...[...new Set(items.map((i) => i.group))].map((g) => items.filter((i) => i.group === g).length));
    assert.ok(Math.abs(split.train.length - 0.7 * items.length) <= largest);
    assert.ok(Math.abs(split.val.length - 0.1 * items.length) <= largest);
    assert.ok(Math.abs(split.test.length - 0.2 * items.length) <= largest);
  });

  test('reproducible, and different seeds differ', () => {
    const items = agiqa();
    const spec: SplitSpec = { seed: 7, ratios: [0.8, 0, 0.2], by: 'group' };
    assert.deepEqual(splitDataset(items, spec), splitDataset(items, { ...spec }));
    assert.notDeepEqual(splitDataset(items, spec).test, splitDataset(items, { ...spec, seed: 8 }).test);
    assert.equal(splitDataset(items, spec).val.length, 0);
  });

  test('the split of a seed never changes (platform- and version-stable)', () => {
    // 40 items in 6 groups of 4 to 8 items, first met out of order to exercise the sort.
    const items: DatasetItem[] = Array.from({ length: 40 }, (_, i) => ({ image: `${i}.png`, mos: i, group: `g${(i * i) % 11}` }));
    const byGroup = splitDataset(items, { seed: 123, ratios: [0.6, 0.2, 0.2], by: 'group' });
    const byImage = splitDataset(items, { seed: 123, ratios: [0.6, 0.2, 0.2], by: 'image' });
    assert.deepEqual(byGroup.test, GOLDEN_GROUP_TEST);
    assert.deepEqual(byImage.test, GOLDEN_IMAGE_TEST);
  });

  test('by image and by official split', () => {
    const items = agiqa();
    const split = splitDataset(items, { seed: 1, ratios: [0.7, 0.1, 0.2], by: 'image' });
    assertPartition(split, items.length);
    assert.ok(Math.abs(split.test.length - 0.2 * items.length) <= 1);
    assert.ok(Math.abs(split.val.length - 0.1 * items.length) <= 1);

    const koniq = fromShared('koniq-10k', 'koniq-10k.csv').items;
    const official = splitDataset(koniq, { seed: 0, ratios: [1, 0, 0], by: 'official' });
    assert.deepEqual([official.train.length, official.val.length, official.test.length], [7058, 1000, 2015]);
    assertPartition(official, koniq.length);
    assert.throws(() => splitDataset(items, { seed: 0, ratios: [1, 0, 0], by: 'official' }), /has no official split/);
  });

  test('rounds use seed + r', () => {
    const items = agiqa();
    const spec: SplitSpec = { seed: 10, ratios: [0.8, 0, 0.2], by: 'group' };
    const rounds = splitRounds(items, spec, 4);
    assert.equal(rounds.length, 4);
    rounds.forEach((r, i) => assert.deepEqual(r, splitDataset(items, { ...spec, seed: 10 + i })));
    assert.equal(new Set(rounds.map((r) => r.test.join(','))).size, 4);
    assert.throws(() => splitRounds(items, spec, 0), RangeError);
  });

  test('bad ratios and seeds are refused', () => {
    const items = agiqa();
    assert.throws(() => splitDataset(items, { seed: 0, ratios: [0.7, 0.1, 0.1], by: 'group' }), /sum to 1/);
    assert.throws(() => splitDataset(items, { seed: 0, ratios: [1.2, -0.2, 0], by: 'group' }), /non-negative/);
    assert.throws(() => splitDataset(items, { seed: 1.5, ratios: [0.8, 0, 0.2], by: 'group' }), /integer/);
  });
});

// Computed once with this implementation; a change here changes every published split.
const GOLDEN_GROUP_TEST = [0, 1, 10, 11, 12, 21, 22, 23, 32, 33, 34];
const GOLDEN_IMAGE_TEST = [0, 2, 5, 7, 10, 11, 23, 27];

describe('label rows that cannot be used', () => {
  test('an infinite MOS (1e400) or a hexadecimal one is refused while loading, naming the line', () => {
    for (const [value, line] of [
      ['1e400', 3],
      ['0x1', 3],
      ['-1e999', 3],
    ] as const) {
      const root = makeRoot(`inf-${value}`, { 'labels.csv': `image,mos\na.png,1\nb.png,${value}\nc.png,2\n` });
      assert.throws(
        () => loadDataset('csv', { root, labelFile: 'labels.csv', checkImages: false }),
        (e: Error) => e instanceof DatasetError && e.message.includes(`labels.csv:${line}: 'mos' is "${value}", not a finite number`),
        value,
      );
    }
    const root = makeRoot('inf-registry', { 'data.csv': 'name,prompt,mos_quality\na.jpg,p,1e400\n' });
    assert.throws(
      () => loadDataset('agiqa-3k', { root, checkImages: false }),
      /data\.csv:2: 'mos_quality' is "1e400", not a finite number/,
    );
  });

  test('the observed MOS range of a csv leaves out the rows dropped as conflicting duplicates', () => {
    const root = makeRoot('dup-range', { 'labels.csv': 'image,mos\na.png,2\nb.png,3\nc.png,1\nc.png,9\nd.png,4\n' });
    const ds = loadDataset('csv', { root, labelFile: 'labels.csv', checkImages: false });
    assert.deepEqual(
      ds.items.map((i) => i.image),
      ['a.png', 'b.png', 'd.png'],
    );
    assert.deepEqual(ds.info.mosRange, [2, 4]);
    assert.equal(ds.warnings?.length, 1);
    assert.match(ds.warnings[0]!, /c\.png is listed 2 times with different scores \(lines 4, 5\)/);
  });

  test('column options are for the generic csv dataset only: the option named in the library, the flag on the command line', () => {
    const root = makeRoot('cols-registry', { 'data.csv': 'name,prompt,mos_quality\na.jpg,p,1\n' });
    const err = caught(() => loadDataset('agiqa-3k', { root, checkImages: false, mosCol: 'mos_align' }));
    assert.match(err.message, /^agiqa-3k: mosCol chooses the columns of the generic 'csv' dataset; agiqa-3k has its own$/);
    assert.match(err.messageFor(flagName), /^agiqa-3k: --mos-col chooses the columns of the generic 'csv' dataset/);
    assert.doesNotMatch(err.messageFor(flagName), /mosCol/);
  });
});

/** The DatasetError `fn` throws. */
function caught(fn: () => unknown): DatasetError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof DatasetError, `expected a DatasetError, got ${String(err)}`);
    return err;
  }
  assert.fail('no error');
}

test('a missing label file is named, with the setting that names another', () => {
  const root = mkdtempSync(join(tmpdir(), 'promptiqa-labels-'));
  try {
    const err = caught(() => loadDataset('agiqa-3k', { root }));
    assert.match(err.message, /data\.csv.*; labelFile names another\)$/);
    assert.match(err.messageFor(flagName), /data\.csv.*; --label-file names another\)$/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

describe('label files that are not what they seem', () => {
  const unix = process.platform !== 'win32';
  const load = (root: string, labelFile: string, more: Partial<LoadOptions> = {}): Dataset =>
    loadDataset('csv', { root, labelFile, checkImages: false, ...more });

  test('/dev/zero as the label file is refused without reading it', { skip: !unix }, () => {
    const root = makeRoot('zero-labels', {});
    assert.throws(
      () => load(root, '/dev/zero'),
      (e: Error) =>
        e instanceof DatasetError && /cannot read label file \/dev\/zero: it is a character device, not a regular file/.test(e.message),
    );
    symlinkSync('/dev/zero', join(root, 'labels.csv'));
    assert.throws(() => loadDataset('agiqa-3k', { root, labelFile: 'labels.csv' }), /labels\.csv: it is a character device/);
  });

  test('a FIFO as the label file is refused without waiting for a writer', { skip: !unix, timeout: 20_000 }, () => {
    const root = makeRoot('fifo-labels', {});
    execFileSync('mkfifo', [join(root, 'labels.csv')]);
    assert.throws(
      () => load(root, 'labels.csv'),
      (e: Error) => e instanceof DatasetError && /labels\.csv: it is a FIFO \(named pipe\)/.test(e.message),
    );
  });

  test('a label file over the cap for label files is refused before it is read', () => {
    const root = makeRoot('huge-labels', { 'labels.csv': 'image,mos\na.png,1\n' });
    truncateSync(join(root, 'labels.csv'), READ_LIMITS.labels + 1); // sparse: nothing written
    assert.throws(
      () => load(root, 'labels.csv'),
      (e: Error) => e instanceof DatasetError && /labels\.csv: it is 1\.1 GB, more than the 1\.1 GB such a file may be/.test(e.message),
    );
  });

  test('a NUL byte in an image path is an error naming the label file and line', () => {
    const root = makeRoot('nul', { 'labels.csv': 'image,mos\na.png,1\nb\0.png,2\n', 'a.png': '' });
    for (const checkImages of [true, false]) {
      assert.throws(
        () => loadDataset('csv', { root, labelFile: 'labels.csv', checkImages }),
        (e: Error) => e instanceof DatasetError && /labels\.csv:3: the image path "b\\u0000\.png" holds a NUL byte/.test(e.message),
      );
    }
  });

  test('UTF-16 with its byte-order mark is read, as UTF-8 with or without one', () => {
    const text = 'image,mos\nsub/é.png,1.5\nb.png,2\n';
    const utf16be = Buffer.from(text, 'utf16le').swap16();
    const files: Record<string, Uint8Array> = {
      'utf8.csv': Buffer.from(text),
      'utf8-bom.csv': Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)]),
      'utf16le.csv': Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')]),
      'utf16be.csv': Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be]),
    };
    const root = makeRoot('encodings', {});
    for (const [name, bytes] of Object.entries(files)) {
      writeFileSync(join(root, name), bytes);
      const ds = load(root, name);
      assert.deepEqual(
        ds.items.map((i) => [i.image, i.mos]),
        [
          ['sub/é.png', 1.5],
          ['b.png', 2],
        ],
        name,
      );
    }
  });

  test('other encodings are refused by name, not reported as a quote error', () => {
    const root = makeRoot('bad-encodings', {});
    const utf32 = Buffer.concat([Buffer.from([0xff, 0xfe, 0, 0]), Buffer.from('i\0\0\0')]);
    writeFileSync(join(root, 'utf32.csv'), utf32);
    assert.throws(() => load(root, 'utf32.csv'), /utf32\.csv: the file is UTF-32 \(little-endian\) text; save it as UTF-8/);
    writeFileSync(join(root, 'latin1.csv'), Buffer.from('image,mos\na.png,1\nd\xe9j\xe0.png,2\n', 'latin1'));
    assert.throws(() => load(root, 'latin1.csv'), /latin1\.csv:3: not UTF-8 text; save the file as UTF-8/);
    writeFileSync(join(root, 'utf16-nobom.csv'), Buffer.from('image,mos\na.png,1\n', 'utf16le'));
    assert.throws(
      () => load(root, 'utf16-nobom.csv'),
      /utf16-nobom\.csv:1: a NUL byte in the header: UTF-16 text without its byte-order mark/,
    );
  });

  test('a semicolon- or tab-separated file is read with its delimiter', () => {
    const root = makeRoot('delimiters', {
      'semi.csv': 'image;mos;prompt\na.png;1.5;"a cat; sitting, quietly"\n"b;c.png";2;x\n',
      'tab.csv': 'image\tmos\tprompt\na.png\t1.5\ta cat; sitting, quietly\nb;c.png\t2\tx\n',
    });
    for (const name of ['semi.csv', 'tab.csv']) {
      const ds = load(root, name, { promptCol: 'prompt' });
      assert.deepEqual(
        ds.items.map((i) => [i.image, i.mos, i.prompt]),
        [
          ['a.png', 1.5, 'a cat; sitting, quietly'],
          ['b;c.png', 2, 'x'],
        ],
        name,
      );
    }
    // a spreadsheet's decimal comma is named as such
    writeFileSync(join(root, 'comma.csv'), 'image;mos\na.png;3,5\n');
    assert.throws(() => load(root, 'comma.csv'), /comma\.csv:2: 'mos' is "3,5", not a finite number \(a decimal comma\? write 3\.5\)/);
  });

  test('image paths outside the root are refused, naming the line, unless allowed', () => {
    const root = makeRoot('outside/set', {
      'labels.csv': 'image,mos\na.png,1\n../../../etc/passwd,2\n',
      'abs.csv': 'image,mos\na.png,1\n/etc/hostname,2\n',
      'a.png': '',
    });
    for (const [file, path] of [
      ['labels.csv', '../../../etc/passwd'],
      ['abs.csv', '/etc/hostname'],
    ] as const) {
      for (const checkImages of [true, false]) {
        const err = caught(() => loadDataset('csv', { root, labelFile: file, checkImages }));
        assert.equal(
          err.message,
          `${join(root, file)}:3: the image path ${JSON.stringify(path)} leads outside the dataset root ${root}; paths are relative to the root (allowOutsideRoot: true allows others)`,
        );
        assert.match(err.messageFor(flagName), /\(--allow-outside-root allows others\)$/);
      }
      const ds = loadDataset('csv', { root, labelFile: file, checkImages: false, allowOutsideRoot: true });
      assert.deepEqual(
        ds.items.map((i) => i.image),
        ['a.png', path],
      );
    }
    // the registry's datasets too, and a path that only passes through a parent folder stays allowed
    writeFileSync(join(root, 'data.csv'), 'name,prompt,mos_quality\n../../a.png,p,1\n');
    assert.throws(
      () => loadDataset('agiqa-3k', { root, checkImages: false }),
      /data\.csv:2: the image path "images\/\.\.\/\.\.\/a\.png" leads outside/,
    );
    writeFileSync(join(root, 'inside.csv'), `image,mos\nsub/../a.png,1\n${join(root, 'a.png')},2\n`);
    assert.equal(loadDataset('csv', { root, labelFile: 'inside.csv', checkImages: false }).items.length, 2);
  });

  test('the command line names its flags in these messages, never the library options', async () => {
    const root = makeRoot('cli-wording', { 'labels.csv': 'image,mos\na.png,1\n../../../etc/passwd,2\n' });
    const model = join(sharedDir(), 'reference', 'tiny-vit-p32');
    const evalArgs = ['eval', '--method', 'clip-iqa', '--model', model, '--dataset', 'csv', '--root', root, '--label-file', 'labels.csv'];
    const outside = await cli(...evalArgs, '--out', join(root, 'out'));
    assert.equal(outside.code, 1);
    assert.match(
      outside.err,
      /labels\.csv:3: the image path "\.\.\/\.\.\/\.\.\/etc\/passwd" leads outside the dataset root .*--allow-outside-root allows others/,
    );
    const allowed = await cli(...evalArgs, '--out', join(root, 'out'), '--allow-outside-root');
    assert.equal(allowed.code, 1);
    assert.match(allowed.err, /1 of 2 images listed in .*labels\.csv are missing/);
    const columns = await cli(
      'train',
      '--method',
      'tang',
      '--model',
      model,
      '--dataset',
      'agiqa-3k',
      '--root',
      root,
      '--mos-col',
      'x',
      '--out',
      join(root, 'run'),
    );
    assert.match(columns.err, /agiqa-3k: --mos-col chooses the columns of the generic 'csv' dataset/);
    for (const r of [outside, allowed, columns]) assert.doesNotMatch(r.err, /allowOutsideRoot|checkImages|mosCol|imageCol/);
  });

  test('an image listed that is a FIFO, a device or a folder is said to be one, not missing', { skip: !unix }, () => {
    const root = makeRoot('not-files', { 'labels.csv': 'image,mos\na.png,1\npipe.png,2\nzero.jpg,3\nsub,4\n', 'a.png': '', 'sub/x': '' });
    execFileSync('mkfifo', [join(root, 'pipe.png')]);
    symlinkSync('/dev/zero', join(root, 'zero.jpg'));
    const err = caught(() => loadDataset('csv', { root, labelFile: 'labels.csv' }));
    assert.equal(
      err.message,
      `csv: 3 of 4 images listed in ${join(root, 'labels.csv')} are not regular files:\n  pipe.png (a FIFO (named pipe))\n  zero.jpg (a character device)\n  sub (a folder)`,
    );
  });

  test('the missing-images error tells the library of checkImages: false, and the command line nothing of it', () => {
    const root = makeRoot('missing-wording', { 'labels.csv': 'image,mos\nnope.png,1\n' });
    const err = caught(() => loadDataset('csv', { root, labelFile: 'labels.csv' }));
    assert.match(err.message, /Pass checkImages: false to load the labels alone\.$/);
    assert.doesNotMatch(err.messageFor(flagName), /checkImages/);
    assert.match(err.messageFor(flagName), /1 of 1 images listed in .*labels\.csv are missing/);
    // nor does the generic dataset's description name library options
    const generic = listDatasets().find((d) => d.name === 'csv')!;
    assert.doesNotMatch(generic.howToGet, /imageCol|mosCol|promptCol/);
  });
});
