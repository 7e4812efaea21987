/**
 * The dataset registry: what each IQA dataset is (scale, direction, split unit, layout) and a parser for
 * its label file. `loadDataset` reads the labels, checks every row, and by default checks that every
 * image exists before any work starts, so a wrong root fails in a second rather than mid-training.
 *
 * Conventions:
 * - `item.image` is a path relative to the dataset root with '/' separators; `imagePath` makes it absolute.
 * - `item.mos` is the chosen target on the dataset's own scale (`info.mosRange`, `info.higherIsBetter`).
 *   The dataset's other targets go to `item.extra` under their target names (`alignment`, ...), the
 *   chosen target's standard deviation to `extra.std` and the others' to `extra.std_<target>`.
 * - `item.group` is the split unit: the normalised generation prompt (AI-generated sets), the reference
 *   image (synthetic distortions) or the image itself (authentic distortions).
 * - Errors are `DatasetError`s naming the label file and the line of the offending row; where they name a
 *   setting, the command line hears its flag and the library its option (`DatasetError.messageFor`).
 * - Image paths stay under the root (no `../..`, no absolute path elsewhere) unless `allowOutsideRoot`.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, extname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { readCsvFile, type Csv } from '../util/csv.js';
import { parseDecimal } from '../util/number.js';
import { libraryName, type OptionName, type Wording } from '../util/option-names.js';
import { describeKind } from '../util/fs.js';

export interface DatasetItem {
  /** Path relative to the dataset root, '/'-separated. */
  image: string;
  mos: number;
  prompt?: string;
  /** Split unit: generation prompt (AIGC sets), reference image (synthetic sets) or the image itself. */
  group: string;
  /** Other targets by name, `std` of the chosen target, `std_<target>` of the others, and per-set extras. */
  extra?: Record<string, number>;
  /** Official split ('train' | 'val' | 'test') when the dataset has one (KonIQ-10k). */
  split?: string;
  distortion?: string;
  scene?: string;
}

export interface DatasetInfo {
  name: string;
  title: string;
  kind: 'aigc' | 'synthetic' | 'authentic';
  /** Nominal scale of the loaded target (of 'quality' in `listDatasets`). */
  mosRange: [number, number];
  /** False for DMOS sets (CSIQ, LIVE). */
  higherIsBetter: boolean;
  /** Default label file name, relative to the root. */
  labelFile: string;
  /** Folder of the images, relative to the root ('.' when the label paths include their folders). */
  imageDir: string;
  /** The first is the default: 'quality'. */
  targets: string[];
  groupBy: 'prompt' | 'reference' | 'image';
  /** Where a user obtains it and how the root must be laid out, one line. */
  howToGet: string;
}

export interface Dataset {
  info: DatasetInfo;
  /** Absolute dataset root. */
  root: string;
  items: DatasetItem[];
  target: string;
  /** Rows left out and why (e.g. one image listed twice with different scores). */
  warnings?: string[];
}

/** The columns of the generic 'csv' dataset; the registry's datasets have their own. */
export type DatasetColumns = Pick<LoadOptions, 'imageCol' | 'mosCol' | 'promptCol'>;

export interface LoadOptions {
  root: string;
  /** Label file, relative to the root or absolute; default `info.labelFile`. */
  labelFile?: string;
  /** Default 'quality'. */
  target?: string;
  /** Default true: every image must exist under the root. */
  checkImages?: boolean;
  /** 'csv' only: column of image paths relative to the root (default 'image'). */
  imageCol?: string;
  /** 'csv' only: column of scores (default 'mos'). */
  mosCol?: string;
  /** 'csv' only: column of generation prompts; when given, items are grouped by prompt. */
  promptCol?: string;
  /** 'csv' only: nominal scale; default the observed [min, max]. */
  mosRange?: [number, number];
  /** 'csv' only: default true. */
  higherIsBetter?: boolean;
  /**
   * Default false: an image path that leads outside the root (`../../etc/passwd`, an absolute `/etc/hostname`)
   * is refused, naming the label file and line, so a label file cannot make the tool open any file it names.
   * The check is on the path as written; links under the root are followed.
   */
  allowOutsideRoot?: boolean;
}

/** A problem with a dataset or its label file. Where the message names a setting, `messageFor` names it another way. */
export class DatasetError extends Error {
  private readonly wording: Wording | undefined;

  /** `message` as text, or as a `Wording` that names options: the library's names in `message`. */
  constructor(message: string | Wording, options?: { cause?: unknown }) {
    super(typeof message === 'string' ? message : message(libraryName), options);
    this.name = 'DatasetError';
    this.wording = typeof message === 'string' ? undefined : message;
  }

  /** The message with the options named by `name` (the command line passes its flags). */
  messageFor(name: OptionName): string {
    return this.wording ? this.wording(name) : this.message;
  }
}

/** Absolute path of an item's image. */
export function imagePath(dataset: Pick<Dataset, 'root'>, item: Pick<DatasetItem, 'image'>): string {
  return resolve(dataset.root, item.image);
}

// ---------------------------------------------------------------------------------------------------
// Label tables

class Table {
  private readonly index = new Map<string, number>();

  constructor(
    readonly file: string,
    readonly header: string[],
    readonly rows: string[][],
    readonly lines: number[],
  ) {
    // The first occurrence wins: SPAQ has two 'Brightness' columns (the rating, then the EXIF value).
    header.forEach((h, i) => {
      if (!this.index.has(h.trim())) this.index.set(h.trim(), i);
    });
  }

  /** Column index by exact name, else case-insensitively; undefined when absent. */
  column(name: string): number | undefined {
    const exact = this.index.get(name);
    if (exact !== undefined) return exact;
    const lower = name.toLowerCase();
    for (const [h, i] of this.index) if (h.toLowerCase() === lower) return i;
    return undefined;
  }

  require(columns: readonly string[]): void {
    const missing = columns.filter((c) => this.column(c) === undefined);
    if (missing.length > 0) {
      throw new DatasetError(
        `${this.file}: missing column${missing.length > 1 ? 's' : ''} ${missing.map((c) => `'${c}'`).join(', ')} ` +
          `(the header has ${this.header.map((c) => `'${c}'`).join(', ')})`,
      );
    }
  }
}

/** One data row, with accessors that name the file and line when a value is unusable. */
class Row {
  constructor(
    private readonly table: Table,
    private readonly fields: string[],
    readonly line: number,
  ) {}

  fail(message: string | Wording): never {
    const where = `${this.table.file}:${this.line}`;
    throw new DatasetError(typeof message === 'string' ? `${where}: ${message}` : (name) => `${where}: ${message(name)}`);
  }

  /**
   * An image path as written in the label file, checked: no NUL byte (which no file name holds), and under
   * `root` unless `allowOutside`.
   */
  imagePath(image: string, root: string, allowOutside: boolean): string {
    if (image.includes('\0')) this.fail(`the image path ${JSON.stringify(image)} holds a NUL byte, which no file name can`);
    if (!allowOutside) {
      const rel = relative(root, resolve(root, image));
      if (rel === '..' || rel.startsWith(`..${sep}`) || rel.startsWith('../') || isAbsolute(rel)) {
        this.fail(
          (name) =>
            `the image path ${JSON.stringify(image)} leads outside the dataset root ${root}; ` +
            `paths are relative to the root (${name('allowOutsideRoot', true)} allows others)`,
        );
      }
    }
    return image;
  }

  /** Trimmed value, or undefined when the column is absent or the field empty. */
  opt(col: string): string | undefined {
    const i = this.table.column(col);
    const v = i === undefined ? undefined : this.fields[i]!.trim();
    return v === '' ? undefined : v;
  }

  str(col: string): string {
    return this.opt(col) ?? this.fail(`empty '${col}' field`);
  }

  optNum(col: string): number | undefined {
    const v = this.opt(col);
    if (v === undefined) return undefined;
    const n = parseDecimal(v);
    if (n === undefined) {
      const comma = /^[+-]?\d+,\d+$/.test(v) ? ` (a decimal comma? write ${v.replace(',', '.')})` : '';
      this.fail(`'${col}' is ${JSON.stringify(v)}, not a finite number${comma}`);
    }
    return n;
  }

  num(col: string): number {
    return this.optNum(col) ?? this.fail(`empty '${col}' field`);
  }
}

/** A label file: a regular file within `READ_LIMITS.labels`, UTF-8 or UTF-16 with its mark, delimited by commas, semicolons or tabs. */
function readTable(file: string): Table {
  let csv: Csv;
  try {
    csv = readCsvFile(file, 'label file');
  } catch (err) {
    throw new DatasetError((err as Error).message, { cause: err });
  }
  return new Table(file, csv.header, csv.rows, csv.lines);
}

// ---------------------------------------------------------------------------------------------------
// Registry

interface TargetDef {
  column: string;
  range: [number, number];
  higherIsBetter: boolean;
  /** Column of the standard deviation of the ratings, when the label file has one. */
  std?: string;
}

/** What a row says besides its scores. */
interface Described {
  /** Relative to the root. */
  image: string;
  prompt?: string;
  /** The reference image, for `groupBy: 'reference'`. */
  reference?: string;
  split?: string;
  distortion?: string;
  scene?: string;
  extra?: Record<string, number>;
}

interface Definition {
  info: Omit<DatasetInfo, 'mosRange' | 'higherIsBetter' | 'targets'>;
  /** By target name; 'quality' first. */
  targets: Record<string, TargetDef>;
  /** Columns every row needs besides the chosen target's. */
  columns: string[];
  /** Null leaves the row out. */
  describe(row: Row): Described | null;
}

/** `dir/name`, or `name` when the images sit at the root. */
function under(dir: string, name: string): string {
  const path = name.replace(/\\/g, '/');
  return dir === '.' || dir === '' ? path : `${dir}/${path}`;
}

/** A reference image's identity: its file name without folder or extension, case-folded (TID2013 mixes 'I01.BMP' and 'i25.bmp'). */
function referenceId(name: string): string {
  const file = basename(name.replace(/\\/g, '/'));
  return file.slice(0, file.length - extname(file).length).toLowerCase();
}

/** Prompts that differ only in case or spacing are the same prompt: grouping them together avoids leaks. */
function promptGroup(prompt: string): string {
  return prompt.trim().replace(/\s+/g, ' ').toLowerCase();
}

const quality = (column: string, range: [number, number], std?: string, higherIsBetter = true): TargetDef => ({
  column,
  range,
  higherIsBetter,
  ...(std === undefined ? {} : { std }),
});

// Distortion codes, as the datasets' documentation names them.
const KADID_TYPES = [
  'gaussian blur',
  'lens blur',
  'motion blur',
  'color diffusion',
  'color shift',
  'color quantization',
  'color saturation 1',
  'color saturation 2',
  'jpeg2000',
  'jpeg',
  'white noise',
  'white noise in color component',
  'impulse noise',
  'multiplicative noise',
  'denoise',
  'brighten',
  'darken',
  'mean shift',
  'jitter',
  'non-eccentricity patch',
  'pixelate',
  'quantization',
  'color block',
  'high sharpen',
  'contrast change',
];
const TID2013_TYPES = [
  'additive gaussian noise',
  'additive noise in color components',
  'spatially correlated noise',
  'masked noise',
  'high frequency noise',
  'impulse noise',
  'quantization noise',
  'gaussian blur',
  'image denoising',
  'jpeg compression',
  'jpeg2000 compression',
  'jpeg transmission errors',
  'jpeg2000 transmission errors',
  'non eccentricity pattern noise',
  'local block-wise distortions',
  'mean shift',
  'contrast change',
  'change of color saturation',
  'multiplicative gaussian noise',
  'comfort noise',
  'lossy compression of noisy images',
  'color quantization with dither',
  'chromatic aberrations',
  'sparse sampling and reconstruction',
];
const CSIQ_TYPES: Record<string, string> = {
  awgn: 'white noise',
  jpeg: 'jpeg',
  jpeg2000: 'jpeg2000',
  fnoise: 'pink noise',
  blur: 'gaussian blur',
  contrast: 'contrast change',
};
const LIVE_TYPES: Record<string, string> = {
  jp2k: 'jpeg2000',
  jpeg: 'jpeg',
  wn: 'white noise',
  gblur: 'gaussian blur',
  fastfading: 'fast fading',
};
/** SPAQ's scene columns, named as LIQE's scene classes. */
const SPAQ_SCENES: Array<[string, string]> = [
  ['Animal', 'animal'],
  ['Cityscape', 'cityscape'],
  ['Human', 'human'],
  ['Indoor scene', 'indoor scene'],
  ['Landscape', 'landscape'],
  ['Night scene', 'night scene'],
  ['Plant', 'plant'],
  ['Still-life', 'still-life'],
  ['Others', 'others'],
];

/** The numbered code in a distortion file name ('I01_07_3.bmp' → type 7, level 3), looked up in a table. */
function codedDistortion(row: Row, name: string, types: string[]): { distortion: string; extra: Record<string, number> } {
  const m = /^[^_]+_(\d+)_(\d+)\./.exec(basename(name));
  if (!m) row.fail(`distorted image name ${JSON.stringify(name)} is not <ref>_<type>_<level>.<ext>`);
  const type = Number(m[1]);
  return { distortion: types[type - 1] ?? `type ${m[1]}`, extra: { level: Number(m[2]) } };
}

const DEFINITIONS: Definition[] = [
  {
    info: {
      name: 'agiqa-3k',
      title: 'AGIQA-3K',
      kind: 'aigc',
      labelFile: 'data.csv',
      imageDir: 'images',
      groupBy: 'prompt',
      howToGet: 'github.com/lcysyzxdxc/AGIQA-3k-Database: data.csv at the root, the 2,982 images in images/',
    },
    targets: {
      quality: quality('mos_quality', [0, 5], 'std_quality'),
      alignment: quality('mos_align', [0, 5], 'std_align'),
    },
    columns: ['name', 'prompt'],
    describe: (r) => ({ image: under('images', r.str('name')), prompt: r.str('prompt') }),
  },
  {
    info: {
      name: 'agiqa-1k',
      title: 'AGIQA-1K',
      kind: 'aigc',
      labelFile: 'agiqa-1k.csv',
      imageDir: 'file',
      groupBy: 'prompt',
      howToGet: 'github.com/lcysyzxdxc/AGIQA-1k-Database: labels as agiqa-1k.csv (name,prompt,MOS), the images in file/',
    },
    targets: { quality: quality('MOS', [0, 5]) },
    columns: ['name', 'prompt'],
    describe: (r) => ({ image: under('file', r.str('name')), prompt: r.str('prompt') }),
  },
  {
    info: {
      name: 'aigciqa2023',
      title: 'AIGCIQA2023',
      kind: 'aigc',
      labelFile: 'aigciqa2023.csv',
      imageDir: 'Image',
      groupBy: 'prompt',
      howToGet:
        'github.com/wangjiarui153/AIGCIQA2023: labels as aigciqa2023.csv (model,image_name,mosz1,mosz2,mosz3,prompt), images in Image/<model>/<image_name>',
    },
    // The label copy in shared is on 0–5; the official MOSz .mat files are on 0–100 (divide them by 20).
    targets: {
      quality: quality('mosz1', [0, 5]),
      authenticity: quality('mosz2', [0, 5]),
      correspondence: quality('mosz3', [0, 5]),
    },
    columns: ['model', 'image_name', 'prompt'],
    describe: (r) => ({
      image: under('Image', `${r.str('model')}/${r.str('image_name')}`),
      // Its prompts carry literal quotes: '"a corgi"'.
      prompt: r
        .str('prompt')
        .replace(/^"+|"+$/g, '')
        .trim(),
    }),
  },
  {
    info: {
      name: 'pku-aigiqa-4k',
      title: 'PKU-AIGIQA-4K',
      kind: 'aigc',
      labelFile: 'pku-aigiqa.csv',
      imageDir: 'images',
      groupBy: 'prompt',
      howToGet:
        'PKU-AIGIQA-4K from its authors (Peking University): labels as pku-aigiqa.csv (Image_prompt,Text_prompt,Generated_image,MOS_q,MOS_a,MOS_c,MOS), images in images/',
    },
    targets: {
      quality: quality('MOS_q', [0, 5]),
      authenticity: quality('MOS_a', [0, 5]),
      correspondence: quality('MOS_c', [0, 5]),
      // The sum of the three.
      overall: quality('MOS', [0, 15]),
    },
    columns: ['Text_prompt', 'Generated_image'],
    describe: (r) => ({ image: under('images', r.str('Generated_image')), prompt: r.str('Text_prompt') }),
  },
  {
    info: {
      name: 'csiq',
      title: 'CSIQ',
      kind: 'synthetic',
      labelFile: 'csiq.csv',
      imageDir: 'dst_imgs',
      groupBy: 'reference',
      howToGet:
        'CSIQ (Larson & Chandler, Oklahoma State University): labels as csiq.csv (ref_name,dist_name,dmos), images in dst_imgs/<type>/ as distributed',
    },
    targets: { quality: quality('dmos', [0, 1], undefined, false) },
    columns: ['ref_name', 'dist_name'],
    describe: (r) => {
      // '1600.AWGN.1.png': reference, type, level; the type is also the folder name, in lower case.
      const name = r.str('dist_name');
      const parts = name.split('.');
      if (parts.length !== 4) r.fail(`distorted image name ${JSON.stringify(name)} is not <ref>.<type>.<level>.<ext>`);
      const type = parts[1]!.toLowerCase();
      return {
        image: under('dst_imgs', `${type}/${name}`),
        reference: r.str('ref_name'),
        distortion: CSIQ_TYPES[type] ?? type,
        extra: { level: Number(parts[2]) },
      };
    },
  },
  {
    info: {
      name: 'kadid-10k',
      title: 'KADID-10k',
      kind: 'synthetic',
      labelFile: 'kadid-10k.csv',
      imageDir: 'images',
      groupBy: 'reference',
      howToGet: 'database.mmsp-kn.de/kadid-10k-database.html: labels as kadid-10k.csv (ref_name,dist_name,dmos,std), images in images/',
    },
    // Its column is called dmos but 5 means an imperceptible distortion: higher is better.
    targets: { quality: quality('dmos', [1, 5], 'std') },
    columns: ['ref_name', 'dist_name'],
    describe: (r) => {
      const name = r.str('dist_name');
      return { image: under('images', name), reference: r.str('ref_name'), ...codedDistortion(r, name, KADID_TYPES) };
    },
  },
  {
    info: {
      name: 'live',
      title: 'LIVE IQA (Release 2)',
      kind: 'synthetic',
      labelFile: 'live.csv',
      imageDir: '.',
      groupBy: 'reference',
      howToGet:
        'live.ece.utexas.edu/research/quality/subjective.htm (Release 2): labels as live.csv (ref_name,dist_name,mos), images in jp2k/, jpeg/, wn/, gblur/, fastfading/',
    },
    // The column is called mos but holds the realigned DMOS of the release: lower is better.
    targets: { quality: quality('mos', [0, 100], undefined, false) },
    columns: ['ref_name', 'dist_name'],
    describe: (r) => {
      const name = r.str('dist_name').replace(/\\/g, '/');
      const folder = name.includes('/') ? name.slice(0, name.indexOf('/')) : '';
      return { image: name, reference: r.str('ref_name'), distortion: LIVE_TYPES[folder.toLowerCase()] ?? (folder || 'unknown') };
    },
  },
  {
    info: {
      name: 'tid2013',
      title: 'TID2013',
      kind: 'synthetic',
      labelFile: 'tid2013.csv',
      imageDir: 'distorted_images',
      groupBy: 'reference',
      howToGet: 'ponomarenko.info/tid2013.htm: labels as tid2013.csv (ref_name,dist_name,mos,std), images in distorted_images/',
    },
    targets: { quality: quality('mos', [0, 9], 'std') },
    columns: ['ref_name', 'dist_name'],
    describe: (r) => {
      const name = r.str('dist_name');
      return { image: under('distorted_images', name), reference: r.str('ref_name'), ...codedDistortion(r, name, TID2013_TYPES) };
    },
  },
  {
    info: {
      name: 'koniq-10k',
      title: 'KonIQ-10k',
      kind: 'authentic',
      labelFile: 'koniq-10k.csv',
      imageDir: '1024x768',
      groupBy: 'image',
      howToGet: 'database.mmsp-kn.de/koniq-10k-database.html: labels as koniq-10k.csv (img_name,mos,std,split,...), images in 1024x768/',
    },
    targets: { quality: quality('mos', [0, 100], 'std') },
    columns: ['img_name'],
    describe: (r) => {
      const split = r.opt('split');
      return { image: under('1024x768', r.str('img_name')), ...(split === undefined ? {} : { split: officialSplit(r, split) }) };
    },
  },
  {
    info: {
      name: 'spaq',
      title: 'SPAQ',
      kind: 'authentic',
      labelFile: 'spaq.csv',
      imageDir: 'TestImage',
      groupBy: 'image',
      howToGet: 'github.com/h4nwei/SPAQ: labels as spaq.csv (Image name,MOS,attribute scores,scene shares,EXIF), images in TestImage/',
    },
    targets: {
      quality: quality('MOS', [0, 100]),
      brightness: quality('Brightness', [0, 100]),
      colorfulness: quality('Colorfulness', [0, 100]),
      contrast: quality('Contrast', [0, 100]),
      noisiness: quality('Noisiness', [0, 100]),
      sharpness: quality('Sharpness', [0, 100]),
    },
    columns: ['Image name'],
    describe: (r) => {
      // Scene shares (the fraction of annotators naming each scene) go to extra as 'scene:<name>';
      // `scene` is set only when one scene has the largest share, as a tie has no single label.
      const extra: Record<string, number> = {};
      let best: string | undefined;
      let bestShare = -Infinity;
      let tie = false;
      for (const [col, scene] of SPAQ_SCENES) {
        const share = r.optNum(col);
        if (share === undefined) continue;
        extra[`scene:${scene}`] = share;
        if (share > bestShare) [best, bestShare, tie] = [scene, share, false];
        else if (share === bestShare) tie = true;
      }
      return { image: under('TestImage', r.str('Image name')), ...(best && !tie && bestShare > 0 ? { scene: best } : {}), extra };
    },
  },
  {
    info: {
      name: 'live-challenge',
      title: 'LIVE In the Wild Image Quality Challenge',
      kind: 'authentic',
      labelFile: 'live-challenge.csv',
      imageDir: 'Images',
      groupBy: 'image',
      howToGet:
        'live.ece.utexas.edu/research/ChallengeDB: labels as live-challenge.csv (img_name,mos,std), images (BMP and JPEG) in Images/',
    },
    targets: { quality: quality('mos', [0, 100], 'std') },
    columns: ['img_name'],
    describe: (r) => {
      const name = r.str('img_name');
      // t1–t7 trained the raters and are not part of the 1,162 images every paper evaluates on.
      if (/^(trainingImages\/)?t[1-7]\.bmp$/i.test(name)) return null;
      return { image: under('Images', name) };
    },
  },
];

/** The generic entry: any CSV, configured by `LoadOptions`; its range here is a placeholder, the loaded one comes from the data. */
const GENERIC: DatasetInfo = {
  name: 'csv',
  title: 'CSV label file',
  kind: 'authentic',
  mosRange: [0, 1],
  higherIsBetter: true,
  labelFile: 'labels.csv',
  imageDir: '.',
  targets: ['quality'],
  groupBy: 'image',
  howToGet: "any CSV with a column of image paths relative to the root ('image') and one of scores ('mos'); the column options name others",
};

const REGISTRY = new Map(DEFINITIONS.map((d) => [d.info.name, d]));

function officialSplit(row: Row, value: string): string {
  switch (value.toLowerCase()) {
    case '0':
    case 'train':
    case 'training':
      return 'train';
    case '1':
    case 'val':
    case 'valid':
    case 'validation':
      return 'val';
    case '2':
    case 'test':
    case 'testing':
      return 'test';
    default:
      return row.fail(`split is ${JSON.stringify(value)}; expected 0/1/2 or train/val/test`);
  }
}

function infoOf(def: Definition, target = 'quality'): DatasetInfo {
  const t = def.targets[target]!;
  return { ...def.info, mosRange: [...t.range], higherIsBetter: t.higherIsBetter, targets: Object.keys(def.targets) };
}

/** Every dataset the registry knows, the generic 'csv' last; ranges are those of 'quality'. */
export function listDatasets(): DatasetInfo[] {
  return [...DEFINITIONS.map((d) => infoOf(d)), { ...GENERIC, mosRange: [...GENERIC.mosRange], targets: [...GENERIC.targets] }];
}

// ---------------------------------------------------------------------------------------------------
// Loading

/**
 * Reads a dataset's labels (from `opts.labelFile`, else `info.labelFile` in the root), checks every row
 * (numeric score on the dataset's scale, required fields present) and, unless `checkImages` is false,
 * that every image exists: all missing images are reported in one DatasetError.
 */
export function loadDataset(name: string, opts: LoadOptions): Dataset {
  const key = name.toLowerCase();
  if (key === GENERIC.name) return loadGeneric(opts);
  const def = REGISTRY.get(key);
  if (!def) {
    throw new DatasetError(`unknown dataset '${name}'; known: ${[...REGISTRY.keys(), GENERIC.name].join(', ')}`);
  }
  const columns = (['imageCol', 'mosCol', 'promptCol'] as const).filter((k) => opts[k] !== undefined);
  if (columns.length > 0) {
    throw new DatasetError(
      (n) =>
        `${def.info.name}: ${columns.map((c) => n(c)).join(', ')} choose${columns.length === 1 ? 's' : ''} the columns of the generic 'csv' dataset; ${def.info.name} has its own`,
    );
  }
  const target = opts.target ?? 'quality';
  const t = def.targets[target];
  if (!t) throw new DatasetError(`${def.info.name} has no target '${target}'; it has ${Object.keys(def.targets).join(', ')}`);

  const root = resolve(opts.root);
  const table = readTable(labelPath(def.info, root, opts.labelFile));
  table.require([...def.columns, t.column]);
  const allowOutside = opts.allowOutsideRoot ?? false;

  const items: DatasetItem[] = [];
  const lines: number[] = [];
  table.rows.forEach((fields, i) => {
    const row = new Row(table, fields, table.lines[i]!);
    const d = def.describe(row);
    if (d === null) return;
    row.imagePath(d.image, root, allowOutside);
    const mos = row.num(t.column);
    checkRange(row, def.info.name, target, t, mos);

    const extra: Record<string, number> = d.extra ?? {}; // fresh per row: safe to add to
    for (const [other, o] of Object.entries(def.targets)) {
      const std = o.std === undefined ? undefined : row.optNum(o.std);
      if (other === target) {
        if (std !== undefined) extra.std = std;
        continue;
      }
      const v = row.optNum(o.column);
      if (v !== undefined) extra[other] = v;
      if (std !== undefined) extra[`std_${other}`] = std;
    }

    const group =
      def.info.groupBy === 'prompt' ? promptGroup(d.prompt!) : def.info.groupBy === 'reference' ? referenceId(d.reference!) : d.image;
    const item: DatasetItem = { image: d.image, mos, group };
    if (d.prompt !== undefined) item.prompt = d.prompt;
    if (Object.keys(extra).length > 0) item.extra = extra;
    if (d.split !== undefined) item.split = d.split;
    if (d.distortion !== undefined) item.distortion = d.distortion;
    if (d.scene !== undefined) item.scene = d.scene;
    items.push(item);
    lines.push(row.line);
  });
  const ds: Dataset = { info: infoOf(def, target), root, items, target };
  return finish(ds, table, opts, dropConflictingDuplicates(ds, table.file, lines));
}

function loadGeneric(opts: LoadOptions): Dataset {
  const root = resolve(opts.root);
  const table = readTable(labelPath(GENERIC, root, opts.labelFile));
  const imageCol = opts.imageCol ?? 'image';
  const mosCol = opts.mosCol ?? 'mos';
  table.require([imageCol, mosCol, ...(opts.promptCol === undefined ? [] : [opts.promptCol])]);
  if (opts.target !== undefined && opts.target !== 'quality') {
    throw new DatasetError((n) => `csv: the generic loader has the single target 'quality' (${n('mosCol')} chooses its column)`);
  }

  const items: DatasetItem[] = [];
  const lines: number[] = [];
  table.rows.forEach((fields, i) => {
    const row = new Row(table, fields, table.lines[i]!);
    const image = row.imagePath(row.str(imageCol).replace(/\\/g, '/'), root, opts.allowOutsideRoot ?? false);
    const mos = row.num(mosCol);
    const prompt = opts.promptCol === undefined ? undefined : row.str(opts.promptCol);
    items.push({ image, mos, ...(prompt === undefined ? {} : { prompt }), group: prompt === undefined ? image : promptGroup(prompt) });
    lines.push(row.line);
  });
  if (items.length === 0) throw new DatasetError(`${table.file}: no rows`);

  const given = opts.mosRange;
  if (given !== undefined) {
    items.forEach((it, i) => {
      if (it.mos < given[0] || it.mos > given[1]) {
        throw new DatasetError(`${table.file}:${lines[i]}: '${mosCol}' is ${it.mos}, outside the given range [${given[0]}, ${given[1]}]`);
      }
    });
  }
  const ds = { root, items, target: 'quality' };
  const warnings = dropConflictingDuplicates(ds, table.file, lines);
  // without a given scale, the observed one: that of the rows kept
  const range =
    given ?? ds.items.reduce<[number, number]>((r, it) => [Math.min(r[0], it.mos), Math.max(r[1], it.mos)], [Infinity, -Infinity]);
  const info: DatasetInfo = {
    ...GENERIC,
    title: `CSV ${basename(table.file)}`,
    kind: opts.promptCol === undefined ? 'authentic' : 'aigc',
    mosRange: [range[0], range[1]],
    higherIsBetter: opts.higherIsBetter ?? true,
    labelFile: opts.labelFile ?? GENERIC.labelFile,
    targets: ['quality'],
    groupBy: opts.promptCol === undefined ? 'image' : 'prompt',
  };
  return finish({ info, ...ds }, table, opts, warnings);
}

function labelPath(info: Pick<DatasetInfo, 'name' | 'labelFile'>, root: string, labelFile?: string): string {
  const path = resolve(root, labelFile ?? info.labelFile);
  if (!existsSync(path)) {
    throw new DatasetError(
      (n) =>
        `${info.name}: label file not found: ${path}` +
        (labelFile === undefined ? ` (expected '${info.labelFile}' in the root; ${n('labelFile')} names another)` : ''),
    );
  }
  return path;
}

// A little slack so that a rounded 5.0000001 on a 0–5 scale does not fail.
const RANGE_SLACK = 1e-6;

function checkRange(row: Row, dataset: string, target: string, t: TargetDef, v: number): void {
  const [lo, hi] = t.range;
  const slack = RANGE_SLACK * (hi - lo);
  if (v < lo - slack || v > hi + slack) {
    row.fail(`'${t.column}' is ${v}, outside ${dataset}'s ${target} scale [${lo}, ${hi}]; is the label file on another scale?`);
  }
}

/** The image check and the warnings, common to every loader; `warnings` are those of `dropConflictingDuplicates`. */
function finish(ds: Dataset, table: Table, opts: LoadOptions, warnings: string[]): Dataset {
  if (ds.items.length === 0) throw new DatasetError(`${table.file}: no usable rows`);
  if (opts.checkImages ?? true) checkImages(ds, table.file);
  return warnings.length > 0 ? { ...ds, warnings } : ds;
}

/**
 * An image listed twice with the same scores is kept once. With different scores (AGIQA-1K lists
 * dreamStudio_8_9_1_1.jpg twice) neither label can be trusted, so all its rows are left out and reported.
 */
function dropConflictingDuplicates(ds: Pick<Dataset, 'items'>, file: string, lines: number[]): string[] {
  const rowsOf = new Map<string, number[]>();
  ds.items.forEach((it, i) => {
    const rows = rowsOf.get(it.image);
    if (rows) rows.push(i);
    else rowsOf.set(it.image, [i]);
  });
  const drop = new Set<number>();
  const warnings: string[] = [];
  for (const [image, rows] of rowsOf) {
    if (rows.length === 1) continue;
    const first = JSON.stringify(ds.items[rows[0]!]);
    const same = rows.every((i) => JSON.stringify(ds.items[i]) === first);
    rows.slice(same ? 1 : 0).forEach((i) => drop.add(i));
    if (!same) {
      warnings.push(
        `${file}: ${image} is listed ${rows.length} times with different scores (lines ${rows.map((i) => lines[i]).join(', ')}); all its rows were left out`,
      );
    }
  }
  if (drop.size > 0) ds.items = ds.items.filter((_, i) => !drop.has(i));
  return warnings;
}

const LIST_MISSING = 20;

function checkImages(ds: Dataset, labelFile: string): void {
  const resolver = new ImageResolver(ds.root);
  const missing: string[] = [];
  const notFiles: string[] = [];
  for (const item of ds.items) {
    const found = resolver.find(item.image);
    if (found !== null) item.image = found;
    else {
      // there, but a folder, a FIFO or a device: said as such, not as missing
      const kind = kindOf(resolve(ds.root, item.image));
      if (kind === undefined) missing.push(item.image);
      else notFiles.push(`${item.image} (${kind})`);
    }
  }
  if (notFiles.length > 0) {
    const shown = notFiles.slice(0, LIST_MISSING).map((m) => `  ${m}`);
    if (notFiles.length > LIST_MISSING) shown.push(`  ... and ${notFiles.length - LIST_MISSING} more`);
    throw new DatasetError(
      `${ds.info.name}: ${notFiles.length} of ${ds.items.length} images listed in ${labelFile} are not regular files:\n${shown.join('\n')}`,
    );
  }
  if (missing.length === 0) return;
  const shown = missing.slice(0, LIST_MISSING).map((m) => `  ${m}`);
  if (missing.length > LIST_MISSING) shown.push(`  ... and ${missing.length - LIST_MISSING} more`);
  throw new DatasetError((n) => {
    const labelsAlone = n('checkImages', false);
    return (
      `${ds.info.name}: ${missing.length} of ${ds.items.length} images listed in ${labelFile} are missing under ${ds.root}:\n` +
      `${shown.join('\n')}\n` +
      `Expected layout: ${ds.info.howToGet}.` +
      (labelsAlone === undefined ? '' : ` Pass ${labelsAlone} to load the labels alone.`)
    );
  });
}

/**
 * Finds an image under the root, falling back to a case-insensitive match of each path segment: label
 * files and archives disagree on case (TID2013 lists 'I01_11_1.BMP' and 'i01_01_2.bmp'), which matters
 * on case-sensitive file systems. Returns the path as it is on disk, or null.
 */
class ImageResolver {
  private readonly listings = new Map<string, Map<string, string[]> | null>();

  constructor(private readonly root: string) {}

  find(rel: string): string | null {
    if (isFile(resolve(this.root, rel))) return rel;
    if (/^([a-zA-Z]:)?[\\/]/.test(rel)) return null; // absolute: nothing to fold
    const out: string[] = [];
    let dir = this.root;
    for (const part of rel.split('/')) {
      if (part === '' || part === '.') continue;
      let name = part;
      if (!existsSync(join(dir, part))) {
        const matches = this.list(dir)?.get(part.toLowerCase());
        if (matches?.length !== 1) return null; // none, or ambiguous
        name = matches[0]!;
      }
      out.push(name);
      dir = join(dir, name);
    }
    return isFile(dir) ? out.join('/') : null;
  }

  private list(dir: string): Map<string, string[]> | null {
    let listing = this.listings.get(dir);
    if (listing === undefined) {
      listing = null;
      try {
        listing = new Map();
        for (const entry of readdirSync(dir)) {
          const key = entry.toLowerCase();
          const same = listing.get(key);
          if (same) same.push(entry);
          else listing.set(key, [entry]);
        }
      } catch {
        listing = null; // not a directory, or unreadable: nothing matches
      }
      this.listings.set(dir, listing);
    }
    return listing;
  }
}

/** What is at `path` when it is there and not a regular file (links followed): "a FIFO (named pipe)", …; else undefined. */
function kindOf(path: string): string | undefined {
  let st;
  try {
    st = statSync(path, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
  if (!st || st.isFile()) return undefined;
  return describeKind(st);
}

function isFile(path: string): boolean {
  return statSync(path, { throwIfNoEntry: false })?.isFile() ?? false;
}
