/**
 * PyTorch weight files, read without PyTorch and without running their pickles: `torch.save` archives
 * (a state dict, nested dicts of tensors, or a bare tensor) and TorchScript archives (OpenAI's released
 * CLIP `.pt` files). Both are zip archives of `<name>/data.pkl`, a pickle that describes the tensors, and
 * `<name>/data/<key>`, the raw bytes of each storage. Tensors are named by their dotted path through the
 * dicts and the module tree, as `state_dict()` names them; their bytes are read only when asked for.
 */
import { readFileHead } from '../util/fs.js';
import { ZipArchive } from '../util/zip.js';
import { PickleDict, PickleError, unpickle, type PickleBuildable, type PickleGlobal } from './pickle.js';
import { DTYPE_BYTES, toFloat32, type SafeDType } from './safetensors.js';
import type { HostTensor } from '../graph/tensor.js';
import { formatShape } from '../graph/graph.js';

export class TorchFileError extends Error {}

/** The storage classes a pickle may name, and the dtype of their elements. */
const STORAGE_DTYPES: Record<string, SafeDType> = {
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

/** A storage of the archive, made only by the persistent-id lookup (so a pickle cannot forge one). */
class Storage {
  constructor(
    readonly dtype: SafeDType,
    /** zip entry holding the bytes */
    readonly entry: string,
    readonly numel: number,
  ) {}
}

/** A tensor as `_rebuild_tensor_v2` defines it: a strided view of a storage. */
interface TensorRef {
  storage: Storage;
  offset: number;
  shape: number[];
  stride: number[];
}

class StorageType implements PickleGlobal {
  constructor(
    readonly qualname: string,
    readonly dtype: SafeDType,
  ) {}
}

/** A `torch.device` written as a value: data only. */
class DeviceValue {
  constructor(
    readonly type: string,
    readonly index: number | undefined,
  ) {}
}

class TensorValue {
  constructor(readonly ref: TensorRef) {}
}

/** An object of a TorchScript module class: only its pickled attributes are kept. */
class ScriptModule implements PickleBuildable {
  state: unknown = undefined;
  constructor(readonly className: string) {}
  setState(state: unknown): void {
    this.state = state;
  }
}

export interface TorchTensorInfo {
  dtype: SafeDType;
  shape: number[];
}

/** A tensor read into memory: floating-point dtypes as float32 (exact for F16/BF16), integers and bools as int64. */
export type TorchTensor =
  { dtype: SafeDType; shape: number[]; data: Float32Array } | { dtype: SafeDType; shape: number[]; data: BigInt64Array };

export type TorchFileKind = 'state-dict' | 'tensor' | 'torchscript';

const FLOAT_DTYPES: ReadonlySet<SafeDType> = new Set(['F16', 'BF16', 'F32', 'F64']);
/** dict and module nesting walked at most */
const MAX_TREE_DEPTH = 64;
/** The most values the tensor tree may name, counting a shared dict once per path to it. */
const MAX_TREE_VISITS = 1_000_000;
/** torch.save before 1.6 wrote a bare pickle that starts (after PROTO, and a FRAME from protocol 4) with this magic number (LONG1) */
const LEGACY_MAGIC = Buffer.from([0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19]);
/** enough of a file's start to tell a zip, a legacy pickle and a tar archive (its "ustar" at byte 257) apart */
const HEAD_BYTES = 512;

/**
 * What a file that is not a zip archive is, when it is PyTorch's legacy format: torch.save before 1.6 wrote a
 * bare pickle (its magic number in the first bytes) and before 0.4 a tar archive. Undefined otherwise.
 */
export function legacyTorchFormat(head: Buffer): string | undefined {
  if (head.length > 2 && head[0] === 0x80 && head.subarray(0, 32).includes(LEGACY_MAGIC)) return 'a pickle with storages after it';
  if (head.length >= 262 && head.toString('latin1', 257, 262) === 'ustar') return 'a tar archive';
  return undefined;
}

function isList(v: unknown): v is unknown[] {
  return Array.isArray(v);
}

/** A storage key: names of letters, digits, '_', '.' and '-' (not '.' or '..'), joined by '/' (torch writes "0", "1", …). */
function isStorageKey(key: string): boolean {
  return key.length <= 256 && key.split('/').every((part) => /^[\w.-]{1,64}$/.test(part) && part !== '.' && part !== '..');
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * An opened PyTorch file. `keys()` lists the tensors by dotted name ('' for a file that is one bare tensor);
 * `readFloat32` and `readInts` read one at a time, so a large archive is never in memory at once.
 */
export class TorchFile {
  private constructor(
    readonly path: string,
    readonly kind: TorchFileKind,
    private readonly zip: ZipArchive,
    private readonly refs: Map<string, TensorRef>,
  ) {}

  static open(path: string): TorchFile {
    const head = readFileHead(path, HEAD_BYTES, 'weights file');
    if (!ZipArchive.looksLikeZip(head)) {
      const legacy = legacyTorchFormat(head);
      if (legacy !== undefined)
        throw new TorchFileError(
          `${path}: PyTorch's legacy format (before 1.6; ${legacy}), which is not read here: re-save it with a current torch (torch.save(torch.load(path), path))`,
        );
      throw new TorchFileError(`${path}: not a PyTorch file (not a zip archive)`);
    }
    const zip = ZipArchive.open(path);
    try {
      const { kind, refs } = readArchive(path, zip);
      return new TorchFile(path, kind, zip, refs);
    } catch (err) {
      zip.close();
      throw err;
    }
  }

  keys(): string[] {
    return [...this.refs.keys()];
  }

  has(name: string): boolean {
    return this.refs.has(name);
  }

  private ref(name: string): TensorRef {
    const r = this.refs.get(name);
    if (!r) throw new TorchFileError(`${this.path}: no tensor named "${name}"`);
    return r;
  }

  info(name: string): TorchTensorInfo {
    const r = this.ref(name);
    return { dtype: r.storage.dtype, shape: [...r.shape] };
  }

  /** The tensor's elements in row-major order, as raw bytes of its dtype. */
  private readElements(name: string): Buffer {
    const { storage, offset, shape, stride } = this.ref(name);
    const size = DTYPE_BYTES[storage.dtype];
    const count = shape.reduce((a, b) => a * b, 1);
    if (count === 0) return Buffer.alloc(0);
    const last = offset + shape.reduce((a, d, i) => a + (d - 1) * stride[i]!, 0);
    const span = this.zip.read(storage.entry, offset * size, (last - offset + 1) * size);
    let contiguous = true;
    for (let i = shape.length - 1, expect = 1; i >= 0; expect *= shape[i]!, i--)
      if (shape[i]! !== 1 && stride[i] !== expect) contiguous = false;
    if (contiguous) return span;
    // a strided view: gather element by element, in row-major order of the view
    const out = Buffer.alloc(count * size);
    const index = new Array<number>(shape.length).fill(0);
    for (let k = 0; k < count; k++) {
      let at = 0;
      for (let i = 0; i < shape.length; i++) at += index[i]! * stride[i]!;
      span.copy(out, k * size, at * size, (at + 1) * size);
      for (let i = shape.length - 1; i >= 0; i--) {
        if (++index[i]! < shape[i]!) break;
        index[i] = 0;
      }
    }
    return out;
  }

  /** Reads a floating-point tensor as float32 (F16 and BF16 exactly, F64 rounded). */
  readFloat32(name: string): HostTensor {
    const { dtype, shape } = this.info(name);
    if (!FLOAT_DTYPES.has(dtype)) throw new TorchFileError(`${this.path}: "${name}" is ${dtype}, not a floating-point tensor`);
    return { shape, data: toFloat32(this.readElements(name), dtype, `${this.path}: "${name}"`) };
  }

  /** Reads an integer or bool tensor as int64. */
  readInt64(name: string): { shape: number[]; data: BigInt64Array } {
    const { dtype, shape } = this.info(name);
    if (FLOAT_DTYPES.has(dtype)) throw new TorchFileError(`${this.path}: "${name}" is ${dtype}, not an integer tensor`);
    const b = this.readElements(name);
    const n = b.length / DTYPE_BYTES[dtype];
    const out = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      if (dtype === 'I64') out[i] = b.readBigInt64LE(i * 8);
      else if (dtype === 'I32') out[i] = BigInt(b.readInt32LE(i * 4));
      else if (dtype === 'I16') out[i] = BigInt(b.readInt16LE(i * 2));
      else if (dtype === 'I8') out[i] = BigInt(b.readInt8(i));
      else out[i] = BigInt(b[i]!);
    }
    return { shape, data: out };
  }

  /** Reads any tensor: floats as float32, integers and bools as int64. */
  read(name: string): TorchTensor {
    const dtype = this.ref(name).storage.dtype;
    return FLOAT_DTYPES.has(dtype) ? { dtype, ...this.readFloat32(name) } : { dtype, ...this.readInt64(name) };
  }

  close(): void {
    this.zip.close();
  }
}

/** Reads every tensor of a PyTorch file into memory (small files: prompts, heads, test fixtures). */
export function readTorchTensors(path: string): { kind: TorchFileKind; tensors: Map<string, TorchTensor> } {
  const f = TorchFile.open(path);
  try {
    return { kind: f.kind, tensors: new Map(f.keys().map((k) => [k, f.read(k)])) };
  } finally {
    f.close();
  }
}

/** Finds `<name>/data.pkl`, unpickles it with torch's allowed globals, and names the tensors it holds. */
function readArchive(path: string, zip: ZipArchive): { kind: TorchFileKind; refs: Map<string, TensorRef> } {
  const pickles = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
  if (pickles.length !== 1)
    throw new TorchFileError(`${path}: not a PyTorch archive (expected one <name>/data.pkl, found ${pickles.length})`);
  const prefix = pickles[0]!.slice(0, -'data.pkl'.length);
  if (zip.entries.has(`${prefix}byteorder`)) {
    const order = zip.read(`${prefix}byteorder`, 0, Math.min(16, zip.entry(`${prefix}byteorder`).size)).toString('latin1');
    if (order !== 'little') throw new TorchFileError(`${path}: byte order "${order}" is not supported (only little-endian)`);
  }
  const pkl = zip.entry(pickles[0]!);
  if (pkl.size > 64 * 1024 * 1024) throw new TorchFileError(`${path}: data.pkl is implausibly large (${pkl.size} bytes)`);
  function fail(problem: string): never {
    throw new TorchFileError(`${path}: ${problem}`);
  }

  const root = unpickle(zip.read(pickles[0]!), {
    file: path,
    findGlobal: (module, name) => findTorchGlobal(path, module, name),
    persistentLoad: (pid) => {
      // ('storage', storage type, key, location, element count)
      if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') fail(`unexpected persistent id in data.pkl`);
      const [, type, key, , numel] = pid as unknown[];
      if (!(type instanceof StorageType)) fail(`persistent id names no storage type`);
      if (typeof key !== 'string' || !isStorageKey(key) || !isNonNegInt(numel)) fail(`malformed storage reference in data.pkl`);
      // `data/<key>`, where torch.save and TorchScript put storages; a key with a folder in it may also name its
      // entry from the archive's top (never above it: every part of the key is a plain name)
      const entry = [`${prefix}data/${key}`, ...(key.includes('/') ? [`${prefix}${key}`] : [])].find((e) => zip.entries.has(e));
      if (entry === undefined) fail(`storage "${key}" is missing from the archive`);
      const bytes = zip.entry(entry).size;
      if (numel * DTYPE_BYTES[type.dtype] > bytes) fail(`storage "${key}" claims ${numel} ${type.dtype} elements but holds ${bytes} bytes`);
      return new Storage(type.dtype, entry, numel);
    },
  });

  const refs = new Map<string, TensorRef>();
  // the dicts on the current path: a dict reached twice (a module shared by two parents) is named under each
  // path, as state_dict() names it; only a dict inside itself is a cycle
  const onPath = new Set<object>();
  let visits = 0;
  const walk = (value: unknown, name: string, depth: number): void => {
    // shared subtrees are walked once per path: bound the total, which a crafted file could make exponential
    if (++visits > MAX_TREE_VISITS) fail(`more than ${MAX_TREE_VISITS} named values (shared dicts repeated too often)`);
    if (value instanceof TensorValue) {
      if (refs.has(name)) fail(`two tensors are named "${name}"`);
      refs.set(name, value.ref);
      return;
    }
    const dict = value instanceof ScriptModule ? value.state : value;
    if (!(dict instanceof PickleDict)) return; // numbers, strings, flags: not tensors
    if (depth > MAX_TREE_DEPTH) fail(`dicts or modules nested deeper than ${MAX_TREE_DEPTH}`);
    if (onPath.has(dict)) fail(`a dict contains itself`);
    onPath.add(dict);
    for (const [k, v] of dict.items) walk(v, name === '' ? String(k) : `${name}.${k}`, depth + 1);
    onPath.delete(dict);
  };
  walk(root, '', 0);
  const kind: TorchFileKind = root instanceof TensorValue ? 'tensor' : root instanceof ScriptModule ? 'torchscript' : 'state-dict';
  if (!(root instanceof TensorValue || root instanceof ScriptModule || root instanceof PickleDict))
    fail(`holds ${root === null ? 'None' : typeof root}, not tensors, a dict of tensors or a TorchScript module`);
  return { kind, refs };
}

/** The only globals a PyTorch weight file may name; everything else is refused by the unpickler. */
function findTorchGlobal(path: string, module: string, name: string): PickleGlobal | undefined {
  const qualname = `${module}.${name}`;
  function fail(problem: string): never {
    throw new PickleError(`${path}: ${qualname}: ${problem}`);
  }
  if (module === 'collections' && name === 'OrderedDict') {
    return {
      qualname,
      call: (args) => {
        if (args.length !== 0) fail('expected no arguments');
        return new PickleDict();
      },
    };
  }
  if (module === 'torch' && name in STORAGE_DTYPES) return new StorageType(qualname, STORAGE_DTYPES[name]!);
  if (module === 'torch._utils' && (name === '_rebuild_tensor_v2' || name === '_rebuild_tensor')) {
    return { qualname, call: (args) => new TensorValue(checkTensor(args, fail)) };
  }
  if (module === 'torch._utils' && name === '_rebuild_parameter') {
    return {
      qualname,
      call: (args) => {
        if (!(args[0] instanceof TensorValue)) fail('expected a tensor');
        return args[0];
      },
    };
  }
  // TorchScript's type tag on a generic list or dict (`restore_type_tag(value, 'Dict[str, Tensor]')`): the value
  // itself, its type string only checked to be one
  if (module === 'torch.jit._pickle' && name === 'restore_type_tag') {
    return {
      qualname,
      call: (args) => {
        if (args.length !== 2 || typeof args[1] !== 'string') fail('expected a value and a type string');
        return args[0];
      },
    };
  }
  // a device value (`torch.device('cpu')`, `torch.device('cuda', 0)`), which TorchScript writes for a module's
  // device attributes: kept as data, nothing is placed anywhere
  if (module === 'torch' && name === 'device') {
    return {
      qualname,
      call: (args) => {
        if (args.length < 1 || args.length > 2 || typeof args[0] !== 'string' || (args.length === 2 && !isNonNegInt(args[1])))
          fail('expected a device name and an optional index');
        return new DeviceValue(args[0], args.length === 2 ? (args[1] as number) : undefined);
      },
    };
  }
  // TorchScript's helpers for typed lists: the list itself is the value
  if (module === 'torch.jit._pickle' && /^build_(int|double|bool|tensor)list$/.test(name)) {
    return {
      qualname,
      call: (args) => {
        const list = args[0];
        if (args.length !== 1 || !isList(list)) fail('expected one list');
        return list;
      },
    };
  }
  // TorchScript module classes (`__torch__.clip.model.CLIP`, `__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d`):
  // objects whose pickled attributes are kept; no code of the archive is read or run
  if (module === '__torch__' || module.startsWith('__torch__.')) {
    return {
      qualname,
      create: (args) => {
        if (args.length !== 0) fail('expected no constructor arguments');
        return new ScriptModule(qualname);
      },
    };
  }
  return undefined;
}

/** `_rebuild_tensor_v2(storage, offset, size, stride, …)`: checked to stay inside the storage, so a crafted shape allocates nothing. */
function checkTensor(args: unknown[], fail: (problem: string) => never): TensorRef {
  const [storage, offset, shape, stride] = args;
  if (!(storage instanceof Storage)) fail('expected a storage');
  const st = storage;
  if (!isNonNegInt(offset)) fail('storage offset is not a non-negative integer');
  if (!Array.isArray(shape) || !shape.every(isNonNegInt)) fail('size is not a tuple of non-negative integers');
  if (!Array.isArray(stride) || stride.length !== shape.length || !stride.every(isNonNegInt)) fail('stride does not match size');
  const dims = shape;
  const steps = stride;
  // the element count may not exceed the storage's: checked one factor at a time, so nothing overflows
  let count = 1;
  for (const d of dims) {
    if (d === 0) count = 0;
    else if (count > 0 && count * d > st.numel) fail(`shape ${formatShape(dims)} has more elements than its storage (${st.numel})`);
    else count *= d;
  }
  if (count > 0) {
    const last = offset + dims.reduce((a, d, i) => a + (d - 1) * steps[i]!, 0);
    if (last >= st.numel)
      fail(
        `shape ${formatShape(dims)} with stride ${formatShape(steps)} at offset ${offset} reads past its storage (${st.numel} elements)`,
      );
  }
  return { storage: st, offset: offset, shape: [...dims], stride: [...steps] };
}
