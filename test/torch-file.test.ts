/**
 * PyTorch files read without PyTorch: the reference fixtures (a TorchScript archive, a torch.save state
 * dict, pyiqa's bare-tensor prompts and nested LIQE checkpoint) give the tensors torch gives, and
 * hand-written archives check the strided views, zip64, and that every malicious or broken file is refused
 * by name before anything runs.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafeTensorsFile } from '../src/clip/safetensors.js';
import { TorchFile, readTorchTensors } from '../src/clip/torch-file.js';
import { openTensorFile } from '../src/clip/tensor-file.js';
import { unpickle } from '../src/clip/pickle.js';
import { loadClipWeights } from '../src/clip/weights.js';
import { sharedDir } from './helpers/shared.js';

const ref = join(sharedDir(), 'reference');
const tmp = mkdtempSync(join(tmpdir(), 'promptiqa-torch-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** The int64 scalars OpenAI's TorchScript CLIPs keep in their state dict (build_model deletes them). */
const JIT_SCALARS: Record<string, bigint> = { input_resolution: 224n, context_length: 77n, vocab_size: 49408n };

/** Every tensor of `file` equals the safetensors one of the same name, bit for bit (the weights are fp16-exact). */
function assertSameAsSafetensors(path: string, kind: string): void {
  const st = SafeTensorsFile.open(join(ref, 'tiny-rn', 'openai.safetensors'));
  const pt = TorchFile.open(path);
  try {
    assert.equal(pt.kind, kind);
    assert.deepEqual(pt.keys().sort(), [...st.keys(), ...Object.keys(JIT_SCALARS)].sort());
    for (const name of st.keys()) {
      const info = st.info(name);
      assert.deepEqual(pt.info(name).shape, info.shape, name);
      if (info.dtype === 'I64') {
        assert.deepEqual(Array.from(pt.readInt64(name).data, Number), st.readInts(name).data, name);
        continue;
      }
      assert.equal(pt.info(name).dtype, 'F16', name);
      assert.deepEqual(pt.readFloat32(name).data, st.readFloat32(name).data, name);
    }
    for (const [name, value] of Object.entries(JIT_SCALARS)) {
      assert.deepEqual(pt.info(name), { dtype: 'I64', shape: [] });
      assert.deepEqual([...pt.readInt64(name).data], [value]);
    }
  } finally {
    pt.close();
    st.close();
  }
}

describe('reference PyTorch files', () => {
  test('OpenAI TorchScript archive: the module tree by state_dict names, values equal to openai.safetensors', () => {
    assertSameAsSafetensors(join(ref, 'tiny-rn', 'openai-jit.pt'), 'torchscript');
  });

  test('torch.save state dict: the same tensors', () => {
    assertSameAsSafetensors(join(ref, 'tiny-rn', 'openai-state-dict.pt'), 'state-dict');
  });

  test("pyiqa's CLIP-IQA+ prompts: a bare fp16 tensor, the context found in pyiqa's prompt embeddings", () => {
    const { kind, tensors } = readTorchTensors(join(ref, 'pyiqa', 'CLIP-IQA+_learned_prompts-tiny-rn.pth'));
    assert.equal(kind, 'tensor');
    assert.deepEqual([...tensors.keys()], ['']);
    const ctx = tensors.get('')!;
    assert.equal(ctx.dtype, 'F16');
    assert.deepEqual(ctx.shape, [16, 64]);
    // [SOT] ctx[0:8] good photo .. ctx[8:16] [EOT]: rows 1–8 and 12–19 of both prompts are the context, cast to float32
    const emb = SafeTensorsFile.open(join(ref, 'pyiqa', 'intermediates.safetensors')).readFloat32('clipiqa+.prompt_embeddings').data;
    for (let p = 0; p < 2; p++) {
      for (let i = 0; i < 16; i++) {
        const row = p * 77 + (i < 8 ? 1 + i : 12 + i - 8);
        assert.deepEqual(emb.subarray(row * 64, (row + 1) * 64), (ctx.data as Float32Array).subarray(i * 64, (i + 1) * 64));
      }
    }
  });

  test("pyiqa's class-specific prompts: a bare float32 [2, 16, 64] tensor", () => {
    const { kind, tensors } = readTorchTensors(join(ref, 'pyiqa', 'CLIP-IQA+_learned_prompts-tiny-rn-csc.pth'));
    assert.equal(kind, 'tensor');
    const t = tensors.get('')!;
    assert.equal(t.dtype, 'F32');
    assert.deepEqual(t.shape, [2, 16, 64]);
    const data = t.data as Float32Array;
    // torch.load's values: the first three, and the float64 sum (a different summation order moves it by ~1e-15)
    assert.deepEqual([...data.subarray(0, 3)], [-0.00469207763671875, -0.0380859375, -0.029937744140625]);
    assert.ok(Math.abs(data.reduce((a, b) => a + b, 0) - 1.072347104549408) < 1e-9);
  });

  for (const [file, sum, first] of [
    ['liqe_koniq-tiny-vit-p32.pt', 2.506706714630127, [0.00695037841796875, -0.0182037353515625, 0.014068603515625]],
    ['liqe_mix-tiny-vit-p32.pt', 2.7581542134284973, [0.0045166015625, -0.0169219970703125, 0.00995635986328125]],
  ] as const) {
    test(`pyiqa's LIQE checkpoint ${file}: {'params': OrderedDict('clip_model.<name>')} by dotted names, and loadClipWeights finds the CLIP in it`, async () => {
      const path = join(ref, 'pyiqa', file);
      const { kind, tensors } = readTorchTensors(path);
      assert.equal(kind, 'state-dict');
      const base = SafeTensorsFile.open(join(ref, 'tiny-vit-p32', 'openai.safetensors'));
      assert.deepEqual(
        [...tensors.keys()].sort(),
        base
          .keys()
          .map((k) => `params.clip_model.${k}`)
          .sort(),
      );
      for (const k of base.keys()) assert.deepEqual(tensors.get(`params.clip_model.${k}`)!.shape, base.info(k).shape, k);
      base.close();
      const conv = tensors.get('params.clip_model.visual.conv1.weight')!;
      assert.equal(conv.dtype, 'F16');
      assert.deepEqual([...conv.data.subarray(0, 3)], first);
      assert.ok(Math.abs((conv.data as Float32Array).reduce((a, b) => a + b, 0) - sum) < 1e-9);

      const w = await loadClipWeights(path);
      const vit = await loadClipWeights(join(ref, 'tiny-vit-p32', 'openai.safetensors'));
      assert.deepEqual(w.config, vit.config);
      assert.equal(w.logitScale, 4.60546875);
      assert.equal(w.vision.kind, 'vit');
      if (w.vision.kind === 'vit') assert.deepEqual(w.vision.patchW.subarray(0, 3), Float32Array.from(first));
    });
  }
});

// ---- hand-written archives -------------------------------------------------------------------------

const op = (...bytes: number[]): Buffer => Buffer.from(bytes);
const MARK = op(0x28);
const TUPLE = op(0x74);
const REDUCE = op(0x52);
const STOP = op(0x2e);
const global = (module: string, name: string): Buffer => Buffer.concat([op(0x63), Buffer.from(`${module}\n${name}\n`)]);
const str = (s: string): Buffer => {
  const b = Buffer.from(s, 'utf8');
  const h = Buffer.alloc(5);
  h[0] = 0x58;
  h.writeUInt32LE(b.length, 1);
  return Buffer.concat([h, b]);
};
const int = (n: number): Buffer => {
  const b = Buffer.alloc(5);
  b[0] = 0x4a;
  b.writeInt32LE(n, 1);
  return b;
};
const tuple = (...items: Buffer[]): Buffer => Buffer.concat([MARK, ...items, TUPLE]);

/** `_rebuild_tensor_v2(storage data/<key>, offset, shape, stride, False, OrderedDict())` */
function tensorPickle(o: { key?: string; storage?: string; numel: number; offset?: number; shape: number[]; stride: number[] }): Buffer {
  const pid = Buffer.concat([
    tuple(str('storage'), global('torch', o.storage ?? 'FloatStorage'), str(o.key ?? '0'), str('cpu'), int(o.numel)),
    op(0x51),
  ]);
  const hooks = Buffer.concat([global('collections', 'OrderedDict'), op(0x29), REDUCE]);
  const args = tuple(pid, int(o.offset ?? 0), tuple(...o.shape.map(int)), tuple(...o.stride.map(int)), op(0x89), hooks);
  return Buffer.concat([global('torch._utils', '_rebuild_tensor_v2'), args, REDUCE]);
}

/** A pickle program: PROTO 2, the body, STOP. */
const pickle = (...body: Buffer[]): Buffer => Buffer.concat([op(0x80, 2), ...body, STOP]);
/** `{name: value, …}` */
const dict = (...kv: Buffer[]): Buffer => Buffer.concat([op(0x7d), MARK, ...kv, op(0x75)]);

/** A zip of stored entries, as torch writes them; with `zip64`, sizes and offsets go in zip64 records. */
function zip(entries: [string, Buffer][], zip64 = false): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of entries) {
    const n = Buffer.from(name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(n.length, 26);
    const extra = Buffer.alloc(zip64 ? 28 : 0);
    if (zip64) {
      extra.writeUInt16LE(0x0001, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(data.length), 4);
      extra.writeBigUInt64LE(BigInt(data.length), 12);
      extra.writeBigUInt64LE(BigInt(offset), 20);
    }
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(45, 4);
    c.writeUInt16LE(45, 6);
    c.writeUInt32LE(zip64 ? 0xffffffff : data.length, 20);
    c.writeUInt32LE(zip64 ? 0xffffffff : data.length, 24);
    c.writeUInt16LE(n.length, 28);
    c.writeUInt16LE(extra.length, 30);
    c.writeUInt32LE(zip64 ? 0xffffffff : offset, 42);
    central.push(c, n, extra);
    parts.push(local, n, data);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(zip64 ? 0xffff : entries.length, 8);
  end.writeUInt16LE(zip64 ? 0xffff : entries.length, 10);
  end.writeUInt32LE(zip64 ? 0xffffffff : cd.length, 12);
  end.writeUInt32LE(zip64 ? 0xffffffff : offset, 16);
  if (!zip64) return Buffer.concat([...parts, cd, end]);
  const rec = Buffer.alloc(56);
  rec.writeUInt32LE(0x06064b50, 0);
  rec.writeBigUInt64LE(44n, 4);
  rec.writeBigUInt64LE(BigInt(entries.length), 24);
  rec.writeBigUInt64LE(BigInt(entries.length), 32);
  rec.writeBigUInt64LE(BigInt(cd.length), 40);
  rec.writeBigUInt64LE(BigInt(offset), 48);
  const loc = Buffer.alloc(20);
  loc.writeUInt32LE(0x07064b50, 0);
  loc.writeBigUInt64LE(BigInt(offset + cd.length), 8);
  loc.writeUInt32LE(1, 16);
  return Buffer.concat([...parts, cd, rec, loc, end]);
}

const floats = (...v: number[]): Buffer => Buffer.from(Float32Array.from(v).buffer);

/** Writes `archive/data.pkl` and `archive/data/<key>` entries into a file of the temporary folder. */
function writeArchive(name: string, pkl: Buffer, storages: Record<string, Buffer> = {}, zip64 = false): string {
  const path = join(tmp, name);
  const entries: [string, Buffer][] = [
    ['archive/data.pkl', pkl],
    ...Object.entries(storages).map(([k, b]): [string, Buffer] => [`archive/data/${k}`, b]),
  ];
  writeFileSync(path, zip(entries, zip64));
  return path;
}

/** The reader refuses the file with an error naming it and containing `what`. */
function assertRefused(path: string, what: RegExp): void {
  assert.throws(
    () => readTorchTensors(path),
    (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.ok(err.message.startsWith(`${path}: `), err.message);
      assert.match(err.message, what);
      return true;
    },
  );
}

describe('hand-written archives', () => {
  const storage = floats(0, 1, 2, 3, 4, 5);

  test('a strided view (a transposed slice at an offset) reads as torch gives it, in zip64 records too', () => {
    for (const zip64 of [false, true]) {
      // a [2, 3] storage viewed transposed: [3, 2] with stride [1, 3]; and [0 1 2 | 3 4 5][:, 1:] = [[1, 2], [4, 5]]
      const path = writeArchive(
        `view-${zip64}.pt`,
        pickle(
          dict(
            str('t'),
            tensorPickle({ numel: 6, shape: [3, 2], stride: [1, 3] }),
            str('s'),
            tensorPickle({ numel: 6, offset: 1, shape: [2, 2], stride: [3, 1] }),
          ),
        ),
        { '0': storage },
        zip64,
      );
      const { tensors } = readTorchTensors(path);
      assert.deepEqual(tensors.get('t'), { dtype: 'F32', shape: [3, 2], data: Float32Array.from([0, 3, 1, 4, 2, 5]) });
      assert.deepEqual(tensors.get('s'), { dtype: 'F32', shape: [2, 2], data: Float32Array.from([1, 2, 4, 5]) });
    }
  });

  test('fp16 and bf16 widen exactly; int64 and bool read as int64', () => {
    const u16 = (...v: number[]): Buffer => Buffer.from(Uint16Array.from(v).buffer);
    const path = writeArchive(
      'dtypes.pt',
      pickle(
        dict(
          str('h'),
          tensorPickle({ key: 'h', storage: 'HalfStorage', numel: 3, shape: [3], stride: [1] }),
          str('bf'),
          tensorPickle({ key: 'bf', storage: 'BFloat16Storage', numel: 2, shape: [2], stride: [1] }),
          str('i'),
          tensorPickle({ key: 'i', storage: 'LongStorage', numel: 2, shape: [2], stride: [1] }),
          str('b'),
          tensorPickle({ key: 'b', storage: 'BoolStorage', numel: 2, shape: [2], stride: [1] }),
        ),
      ),
      {
        h: u16(0x3c00, 0xc000, 0x0001),
        bf: u16(0x3fc0, 0xc2f7),
        i: Buffer.from(BigInt64Array.from([-3n, 1n << 40n]).buffer),
        b: Buffer.from([1, 0]),
      },
    );
    const { tensors } = readTorchTensors(path);
    assert.deepEqual(tensors.get('h'), { dtype: 'F16', shape: [3], data: Float32Array.from([1, -2, 2 ** -24]) });
    assert.deepEqual(tensors.get('bf'), { dtype: 'BF16', shape: [2], data: Float32Array.from([1.5, -123.5]) });
    assert.deepEqual(tensors.get('i'), { dtype: 'I64', shape: [2], data: BigInt64Array.from([-3n, 1n << 40n]) });
    assert.deepEqual(tensors.get('b'), { dtype: 'BOOL', shape: [2], data: BigInt64Array.from([1n, 0n]) });
  });

  test('a dict reached twice (a module shared by two parents) is named under each path; a dict inside itself is refused', () => {
    const inner = Buffer.concat([dict(str('w'), tensorPickle({ numel: 6, shape: [6], stride: [1] })), op(0x71, 1)]);
    const shared = writeArchive('shared.pt', pickle(dict(str('a'), inner, str('b'), op(0x68, 1))), { '0': storage });
    const { tensors } = readTorchTensors(shared);
    assert.deepEqual([...tensors.keys()], ['a.w', 'b.w']);
    // {'self': <itself>}: EMPTY_DICT, BINPUT 0, then SETITEMS with BINGET 0
    const cycle = writeArchive('cycle.pt', pickle(op(0x7d, 0x71, 0), MARK, str('self'), op(0x68, 0), op(0x75)));
    assertRefused(cycle, /a dict contains itself/);
  });

  test('a global that would run a command is refused by name, and nothing runs', () => {
    const marker = join(tmp, 'pwned');
    const path = writeArchive('os-system.pt', pickle(global('os', 'system'), tuple(str(`touch ${marker}`)), REDUCE));
    assertRefused(path, /refused global os\.system/);
    assert.equal(existsSync(marker), false);
    // protocol 4's STACK_GLOBAL is checked the same way
    const stack = writeArchive('posix-system.pt', pickle(str('posix'), str('system'), op(0x93), tuple(str(`touch ${marker}`)), REDUCE));
    assertRefused(stack, /refused global posix\.system/);
    assert.equal(existsSync(marker), false);
  });

  test('builtins.eval, and a global refused even where its REDUCE never comes', () => {
    assertRefused(writeArchive('eval.pt', pickle(global('builtins', 'eval'), tuple(str('1+1')), REDUCE)), /refused global builtins\.eval/);
    assertRefused(writeArchive('getattr.pt', pickle(global('builtins', 'getattr'))), /refused global builtins\.getattr/);
    // a torch name that is not on the list is refused like any other
    assertRefused(writeArchive('torch-load.pt', pickle(global('torch', 'load'))), /refused global torch\.load/);
  });

  test('REDUCE on an allowed name that is not a callable, and BUILD on a storage type, are refused', () => {
    assertRefused(
      writeArchive('reduce-storage.pt', pickle(global('torch', 'FloatStorage'), tuple(int(1)), REDUCE)),
      /refused REDUCE: torch\.FloatStorage/,
    );
    assertRefused(
      writeArchive('build-storage.pt', pickle(global('torch', 'FloatStorage'), dict(), op(0x62))),
      /refused BUILD on torch\.FloatStorage/,
    );
    assertRefused(
      writeArchive('reduce-module.pt', pickle(global('__torch__.m', 'M'), op(0x29), REDUCE)),
      /refused REDUCE: __torch__\.m\.M/,
    );
  });

  test('a storage forged in the pickle (not a persistent id of the archive) is refused', () => {
    const forged = Buffer.concat([
      global('torch._utils', '_rebuild_tensor_v2'),
      tuple(dict(str('entry'), str('archive/data.pkl')), int(0), tuple(int(1)), tuple(int(1))),
      REDUCE,
    ]);
    assertRefused(writeArchive('forged.pt', pickle(forged)), /_rebuild_tensor_v2: expected a storage/);
  });

  test('the unpickler stops at its opcode and memo limits', () => {
    const none = () => undefined;
    const body = pickle(op(0x5d), op(0x71, 0), op(0x71, 1), op(0x4e), op(0x61), op(0x4e), op(0x61));
    assert.deepEqual(unpickle(body, { file: 'x.pkl', findGlobal: none }), [null, null]);
    assert.throws(() => unpickle(body, { file: 'x.pkl', findGlobal: none, maxOps: 4 }), /x\.pkl: more than 4 opcodes/);
    assert.throws(() => unpickle(body, { file: 'x.pkl', findGlobal: none, maxMemo: 1 }), /x\.pkl: more than 1 memo entries/);
  });

  test('an unknown opcode is refused by its byte', () => {
    // INST (0x69) would import and call a class by name
    assertRefused(writeArchive('inst.pt', pickle(op(0x69), Buffer.from('os\nsystem\n'))), /refused opcode 0x69/);
  });

  test('a shape larger than its storage is refused before anything is allocated', () => {
    const huge = writeArchive(
      'huge.pt',
      pickle(dict(str('w'), tensorPickle({ numel: 6, shape: [1_000_000, 1_000_000], stride: [1_000_000, 1] }))),
      { '0': storage },
    );
    assertRefused(huge, /more elements than its storage \(6\)/);
    const broadcast = writeArchive(
      'broadcast.pt',
      pickle(dict(str('w'), tensorPickle({ numel: 6, shape: [1_000_000_000], stride: [0] }))),
      { '0': storage },
    );
    assertRefused(broadcast, /more elements than its storage/);
    const past = writeArchive('past.pt', pickle(dict(str('w'), tensorPickle({ numel: 6, offset: 3, shape: [2, 2], stride: [2, 1] }))), {
      '0': storage,
    });
    assertRefused(past, /reads past its storage/);
    const lying = writeArchive(
      'lying.pt',
      pickle(dict(str('w'), tensorPickle({ numel: 1_000_000, shape: [1000, 1000], stride: [1000, 1] }))),
      { '0': storage },
    );
    assertRefused(lying, /claims 1000000 F32 elements but holds 24 bytes/);
    const missing = writeArchive('missing.pt', pickle(dict(str('w'), tensorPickle({ key: '7', numel: 6, shape: [6], stride: [1] }))), {
      '0': storage,
    });
    assertRefused(missing, /storage "7" is missing/);
  });

  test('nesting and truncation: deep MARKs, a pickle cut short, a truncated zip', () => {
    assertRefused(writeArchive('deep.pt', pickle(Buffer.alloc(5000, 0x28))), /nesting deeper than 1000/);
    assertRefused(
      writeArchive('cut.pt', Buffer.concat([op(0x80, 2), op(0x58, 0xff, 0xff, 0xff, 0x7f), Buffer.from('abc')])),
      /ends in the middle of an opcode/,
    );
    const whole = readFileSync(join(ref, 'pyiqa', 'CLIP-IQA+_learned_prompts-tiny-rn.pth'));
    const truncated = join(tmp, 'truncated.pth');
    writeFileSync(truncated, whole.subarray(0, whole.length - 100));
    assertRefused(truncated, /not a zip archive, or truncated/);
  });

  test('a TorchScript archive as torch 1.7 wrote it: version, constants.pkl, code/, type tags, devices, a storage key with a folder', () => {
    const NEWOBJ = op(0x81);
    const BUILD = op(0x62);
    /** a TorchScript module object: `cls.__new__(cls)`, then BUILD with its attributes */
    const scriptModule = (module: string, cls: string, ...attrs: Buffer[]): Buffer =>
      Buffer.concat([global(module, cls), op(0x29), NEWOBJ, dict(...attrs), BUILD]);
    const list = (...items: Buffer[]): Buffer => Buffer.concat([op(0x5d), MARK, ...items, op(0x65)]);
    const data = pickle(
      scriptModule(
        '__torch__.clip.model',
        'CLIP',
        str('training'),
        op(0x89),
        str('visual'),
        scriptModule(
          '__torch__.clip.model',
          'VisionTransformer',
          str('proj'),
          tensorPickle({ key: '0', numel: 4, shape: [2, 2], stride: [2, 1] }),
          str('device'),
          Buffer.concat([global('torch', 'device'), tuple(str('cpu')), REDUCE]),
          str('cuda'),
          Buffer.concat([global('torch', 'device'), tuple(str('cuda'), int(0)), REDUCE]),
        ),
        // a generic dict of tensors, tagged with its TorchScript type
        str('extras'),
        Buffer.concat([
          global('torch.jit._pickle', 'restore_type_tag'),
          tuple(dict(str('scale'), tensorPickle({ key: 'extra/1', numel: 1, shape: [], stride: [] })), str('Dict[str, Tensor]')),
          REDUCE,
        ]),
        str('sizes'),
        Buffer.concat([global('torch.jit._pickle', 'build_intlist'), tuple(list(int(1), int(2))), REDUCE]),
        str('names'),
        Buffer.concat([global('torch.jit._pickle', 'restore_type_tag'), tuple(list(str('a')), str('List[str]')), REDUCE]),
      ),
    );
    // constants.pkl: the traced graph's constants (a tuple of tensors), which weights never need
    const constants = pickle(tuple(tensorPickle({ key: '0', numel: 2, shape: [2], stride: [1] })));
    const path = join(tmp, 'torch17.pt');
    writeFileSync(
      path,
      zip([
        ['RN50/version', Buffer.from('3\n')],
        ['RN50/data.pkl', data],
        ['RN50/code/__torch__/clip/model.py', Buffer.from('class CLIP(Module):\n  __parameters__ = []\n')],
        ['RN50/code/__torch__/clip/model.py.debug_pkl', pickle(op(0x29))],
        ['RN50/constants.pkl', constants],
        ['RN50/constants/0', floats(9, 9)],
        ['RN50/data/0', floats(1, 2, 3, 4)],
        ['RN50/data/extra/1', floats(0.5)],
      ]),
    );
    const file = TorchFile.open(path);
    try {
      assert.equal(file.kind, 'torchscript');
      assert.deepEqual(file.keys().sort(), ['extras.scale', 'visual.proj']);
      assert.deepEqual(file.readFloat32('visual.proj'), { shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) });
      assert.deepEqual(file.readFloat32('extras.scale'), { shape: [], data: Float32Array.from([0.5]) });
    } finally {
      file.close();
    }
    // the allowed names stay data: a device or a type tag given the wrong arguments is refused by name
    const badDevice = writeArchive('bad-device.pt', pickle(global('torch', 'device'), tuple(dict()), REDUCE));
    assertRefused(badDevice, /torch\.device: expected a device name/);
    const badTag = writeArchive('bad-tag.pt', pickle(global('torch.jit._pickle', 'restore_type_tag'), tuple(dict()), REDUCE));
    assertRefused(badTag, /restore_type_tag: expected a value and a type string/);
    // a key that climbs out of the archive's folder is no storage key
    const climbing = writeArchive(
      'climb.pt',
      pickle(dict(str('w'), tensorPickle({ key: '../data/0', numel: 1, shape: [1], stride: [1] }))),
      {
        '0': floats(1),
      },
    );
    assertRefused(climbing, /malformed storage reference/);
  });

  test('a central directory claimed larger than 64 MB is refused before it is read into memory', () => {
    // a sparse 100 MB file whose end record claims an 80 MB directory at its start
    const path = join(tmp, 'huge-directory.pt');
    const size = 100 << 20;
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(1000, 8);
    end.writeUInt16LE(1000, 10);
    end.writeUInt32LE(80 << 20, 12);
    end.writeUInt32LE(0, 16);
    writeFileSync(path, Buffer.from([0x50, 0x4b, 0x03, 0x04]));
    truncateSync(path, size);
    const fd = openSync(path, 'r+');
    writeSync(fd, end, 0, end.length, size - end.length);
    closeSync(fd);
    assertRefused(path, /implausible central directory \(1000 entries in 83886080 bytes\)/);
  });

  test('files that are not PyTorch archives are named as such; the legacy format (before 1.6) by that name', () => {
    // the first bytes of torch.save(..., _use_new_zipfile_serialization=False) with pickle protocols 2 and 4 (torch 1.13)
    const legacyHeads = {
      proto2: '80028a0a6cfc9c46f9206aa850192e80024de9032e80027d7100285810000000',
      proto4: '8004950d000000000000008a0a6cfc9c46f9206aa850192e8004950400000000',
    };
    for (const [name, hex] of Object.entries(legacyHeads)) {
      // whatever the name: .pt, or a name that says nothing (opened through the weight loader's tensor-file reader)
      for (const file of [`legacy-${name}.pt`, `legacy-${name}.weights`]) {
        const legacy = join(tmp, file);
        writeFileSync(legacy, Buffer.from(hex, 'hex'));
        assertRefused(legacy, /PyTorch's legacy format \(before 1\.6; a pickle with storages after it\).*re-save it with a current torch/);
        assert.throws(() => openTensorFile(legacy), /PyTorch's legacy format \(before 1\.6/);
      }
    }
    const tar = Buffer.alloc(1024);
    tar.write('storages', 0);
    tar.write('ustar', 257, 'latin1');
    const tarFile = join(tmp, 'legacy-tar.pt');
    writeFileSync(tarFile, tar);
    assertRefused(tarFile, /PyTorch's legacy format \(before 1\.6; a tar archive\)/);
    const text = join(tmp, 'text.pt');
    writeFileSync(text, 'hello');
    assertRefused(text, /not a PyTorch file/);
    const otherZip = join(tmp, 'other.zip');
    writeFileSync(otherZip, zip([['readme.txt', Buffer.from('hi')]]));
    assertRefused(otherZip, /expected one <name>\/data\.pkl, found 0/);
  });
});
