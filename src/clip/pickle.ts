/**
 * A restricted unpickler: reads the subset of Python's pickle format (protocol 2, plus the few protocol 4
 * opcodes newer writers use) that describes tensors, dicts, lists and tuples, without executing anything.
 * A pickle is a program; here every GLOBAL is looked up in a table the caller gives (`findGlobal`), and a
 * name outside it is refused the moment the opcode is read, before any later opcode runs. REDUCE, NEWOBJ and
 * BUILD only ever reach the caller's own functions. Sizes are checked before anything is allocated.
 */

export class PickleError extends Error {}

/** A global the caller allows: what REDUCE (`call`), NEWOBJ (`create`) and use as a value do with it. */
export interface PickleGlobal {
  readonly qualname: string;
  call?(args: unknown[]): unknown;
  create?(args: unknown[]): unknown;
}

/** An object BUILD may give state to (e.g. a TorchScript module, a dict with attributes). */
export interface PickleBuildable {
  setState(state: unknown): void;
}

/** A Python dict (or OrderedDict); keys are strings or integers. `attributes` holds BUILD's state, if any. */
export class PickleDict implements PickleBuildable {
  readonly items = new Map<string | number, unknown>();
  attributes: unknown = undefined;
  setState(state: unknown): void {
    this.attributes = state;
  }
}

export interface UnpickleOptions {
  /** names the file in errors */
  file: string;
  /** returns the allowed global, or undefined to refuse it */
  findGlobal(module: string, name: string): PickleGlobal | undefined;
  /** resolves BINPERSID (e.g. a storage key); throws to refuse */
  persistentLoad?(pid: unknown): unknown;
  /** memo entries at most (default 1 million) */
  maxMemo?: number;
  /** opcodes run at most (default 10 million): each makes at most one value, so this bounds memory */
  maxOps?: number;
  /** MARK nesting at most (default 1000) */
  maxDepth?: number;
}

function isBuildable(v: unknown): v is PickleBuildable {
  return typeof v === 'object' && v !== null && typeof (v as Partial<PickleBuildable>).setState === 'function';
}

function isGlobal(v: unknown): v is PickleGlobal {
  return typeof v === 'object' && v !== null && typeof (v as Partial<PickleGlobal>).qualname === 'string' && !(v instanceof PickleDict);
}

/** Describes a pickled value in a few words for error messages. */
export function describePickled(v: unknown): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return `a sequence of ${v.length}`;
  if (v instanceof PickleDict) return 'a dict';
  if (isGlobal(v)) return v.qualname;
  if (typeof v === 'object') return (v as { constructor?: { name?: string } }).constructor?.name ?? 'an object';
  if (typeof v === 'string') return `string ${JSON.stringify(v.slice(0, 40))}`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v} ${v.toString()}`;
  return typeof v;
}

/** Runs the pickle in `data` and returns the value STOP leaves. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const maxMemo = opts.maxMemo ?? 1_000_000;
  const maxOps = opts.maxOps ?? 10_000_000;
  let ops = 0;
  const maxDepth = opts.maxDepth ?? 1000;
  let stack: unknown[] = [];
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();
  let pos = 0;
  let opPos = 0;
  function fail(problem: string): never {
    throw new PickleError(`${opts.file}: ${problem} (pickle byte ${opPos})`);
  }
  const need = (n: number): number => {
    if (n < 0 || pos + n > buf.length) fail('the pickle ends in the middle of an opcode (truncated?)');
    const at = pos;
    pos += n;
    return at;
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('stack underflow (malformed pickle)');
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow (malformed pickle)');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) fail('no MARK to pop to (malformed pickle)');
    stack = prev;
    return items;
  };
  const put = (index: number): void => {
    if (!memo.has(index) && memo.size >= maxMemo) fail(`more than ${maxMemo} memo entries`);
    memo.set(index, top());
  };
  const get = (index: number): void => {
    if (!memo.has(index)) fail(`memo entry ${index} is read before it is written`);
    stack.push(memo.get(index));
  };
  const global = (module: string, name: string): void => {
    const g = opts.findGlobal(module, name);
    if (!g) fail(`refused global ${module}.${name}: only tensors, storages, dicts and TorchScript modules may be unpickled`);
    stack.push(g);
  };
  const line = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0 || end - pos > 512) fail('GLOBAL without a newline-terminated name');
    const s = buf.toString('utf8', pos, end);
    pos = end + 1;
    return s;
  };
  const setItems = (dict: unknown, kv: unknown[]): void => {
    if (!(dict instanceof PickleDict)) fail(`SETITEM on ${describePickled(dict)}, not a dict`);
    if (kv.length % 2 !== 0) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < kv.length; i += 2) {
      const k = kv[i];
      if (typeof k !== 'string' && typeof k !== 'number') fail(`dict key ${describePickled(k)} is neither a string nor an integer`);
      dict.items.set(k, kv[i + 1]);
    }
  };
  const append = (list: unknown, values: unknown[]): void => {
    if (!Array.isArray(list)) fail(`APPEND on ${describePickled(list)}, not a list`);
    for (const v of values) list.push(v);
  };

  for (;;) {
    opPos = pos;
    if (++ops > maxOps) fail(`more than ${maxOps} opcodes`);
    const op = buf[need(1)]!;
    switch (op) {
      case 0x80: // PROTO
        if (buf[need(1)]! > 5) fail(`pickle protocol ${buf[pos - 1]} is unknown`);
        break;
      case 0x95: // FRAME: a length hint only
        need(8);
        break;
      case 0x2e: // STOP
        if (marks.length) fail('STOP inside an open MARK (malformed pickle)');
        return pop();
      case 0x28: // MARK
        if (marks.length >= maxDepth) fail(`nesting deeper than ${maxDepth}`);
        marks.push(stack);
        stack = [];
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: // TUPLE
        {
          const items = popMark(); // before `stack` is read: popping the mark replaces it
          stack.push(items);
        }
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x6c: // LIST
        {
          const items = popMark(); // before `stack` is read: popping the mark replaces it
          stack.push(items);
        }
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        append(top(), [v]);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        append(top(), items);
        break;
      }
      case 0x7d: // EMPTY_DICT
        stack.push(new PickleDict());
        break;
      case 0x64: {
        // DICT
        const d = new PickleDict();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(buf.readInt32LE(need(4)));
        break;
      case 0x4b: // BININT1
        stack.push(buf[need(1)]!);
        break;
      case 0x4d: // BININT2
        stack.push(buf.readUInt16LE(need(2)));
        break;
      case 0x8a: {
        // LONG1: little-endian two's complement of n bytes
        const n = buf[need(1)]!;
        const at = need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[at + i]!);
        if (n > 0 && buf[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        stack.push(buf.readDoubleBE(need(8)));
        break;
      case 0x58: {
        // BINUNICODE
        const n = buf.readUInt32LE(need(4));
        const at = need(n);
        stack.push(buf.toString('utf8', at, at + n));
        break;
      }
      case 0x8c: {
        // SHORT_BINUNICODE
        const n = buf[need(1)]!;
        const at = need(n);
        stack.push(buf.toString('utf8', at, at + n));
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        global(module, line());
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        global(module, name);
        break;
      }
      case 0x52: {
        // REDUCE: callable(*args), only for the allowed globals that define `call`
        const args = pop();
        const fn = pop();
        if (!isGlobal(fn) || !fn.call) fail(`refused REDUCE: ${describePickled(fn)} is not a callable this reader allows`);
        if (!Array.isArray(args)) fail(`REDUCE arguments are ${describePickled(args)}, not a tuple`);
        stack.push(fn.call(args));
        break;
      }
      case 0x81: {
        // NEWOBJ: cls.__new__(cls, *args)
        const args = pop();
        const cls = pop();
        if (!isGlobal(cls) || !cls.create) fail(`refused NEWOBJ: ${describePickled(cls)} is not a class this reader allows`);
        if (!Array.isArray(args)) fail(`NEWOBJ arguments are ${describePickled(args)}, not a tuple`);
        stack.push(cls.create(args));
        break;
      }
      case 0x62: {
        // BUILD: records the state; nothing like __setstate__ runs
        const state = pop();
        const obj = top();
        if (!isBuildable(obj)) fail(`refused BUILD on ${describePickled(obj)}`);
        obj.setState(state);
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail('a persistent id, but this file has no storages');
        stack.push(opts.persistentLoad(pid));
        break;
      }
      case 0x71: // BINPUT
        put(buf[need(1)]!);
        break;
      case 0x72: // LONG_BINPUT
        put(buf.readUInt32LE(need(4)));
        break;
      case 0x94: // MEMOIZE
        put(memo.size);
        break;
      case 0x68: // BINGET
        get(buf[need(1)]!);
        break;
      case 0x6a: // LONG_BINGET
        get(buf.readUInt32LE(need(4)));
        break;
      case 0x30: // POP
        pop();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      default:
        fail(`refused opcode 0x${op.toString(16).padStart(2, '0')}: not one that tensors, dicts and lists need`);
    }
  }
}
