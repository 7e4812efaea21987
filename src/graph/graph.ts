/**
 * A small typed graph builder. Values have static shapes and dtypes; every op checks its operands and
 * infers its output shape when it is added, so a mistake shows where the graph is built, not deep inside
 * ONNX Runtime. The graph is a list of nodes in the order they were added, which is a topological order.
 * It serialises to ONNX (see onnx.ts) and is differentiated by grad.ts.
 */

export type DType = 'float32' | 'float64' | 'float16' | 'int64' | 'int32' | 'bool';
export type FloatDType = 'float32' | 'float64' | 'float16';
export type TypedData = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Uint8Array;

/** How a value comes into the graph. */
export type ValueKind = 'input' | 'weight' | 'constant' | 'node';

export class Value {
  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly kind: ValueKind,
    readonly shape: readonly number[],
    readonly dtype: DType,
    /** graph inputs and weights carry their public name; node outputs get one when serialised */
    readonly name: string,
    /** the node that computes this value (kind 'node') */
    readonly producer: Node | null = null,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  toString(): string {
    return `${this.name}: ${this.dtype}[${this.shape.join(', ')}]`;
  }
}

export type Attr = { i: number } | { f: number } | { s: string } | { ints: readonly number[] } | { floats: readonly number[] };

/**
 * Every ONNX op the builder below can emit. grad.ts keys its rules by this type, so a new op does not
 * compile until it has a gradient rule or is marked not differentiable there.
 */
export type OpType =
  | 'Identity'
  | 'Add'
  | 'Sub'
  | 'Mul'
  | 'Div'
  | 'Pow'
  | 'Greater'
  | 'Less'
  | 'Neg'
  | 'Exp'
  | 'Log'
  | 'Sqrt'
  | 'Tanh'
  | 'Sigmoid'
  | 'Relu'
  | 'Erf'
  | 'Abs'
  | 'Sign'
  | 'Cast'
  | 'Where'
  | 'MatMul'
  | 'Reshape'
  | 'Transpose'
  | 'Concat'
  | 'Slice'
  | 'Pad'
  | 'Expand'
  | 'Gather'
  | 'ReduceSum'
  | 'ReduceMean'
  | 'ReduceMax'
  | 'Softmax'
  | 'LayerNormalization'
  | 'Conv'
  | 'ConvTranspose'
  | 'AveragePool';

export interface Node {
  readonly op: OpType;
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Readonly<Record<string, Attr>>;
  /** domain for non-standard ops (e.g. 'com.microsoft'); '' is the ONNX domain */
  readonly domain: string;
}

/** A weight or constant: data that becomes an initializer. */
export interface Initializer {
  readonly value: Value;
  readonly data: TypedData;
}

export class GraphError extends Error {}

const FLOAT_DTYPES: ReadonlySet<DType> = new Set(['float32', 'float64', 'float16']);

export function isFloat(dtype: DType): dtype is FloatDType {
  return FLOAT_DTYPES.has(dtype);
}

export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A shape as error messages print it: [1, 3, 224, 224]. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** numpy broadcasting of two shapes; throws when they do not broadcast. */
export function broadcastShapes(a: readonly number[], b: readonly number[], what = 'broadcast'): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) throw new GraphError(`${what}: shapes ${formatShape(a)} and ${formatShape(b)} do not broadcast`);
    out[i] = da === 1 ? db : da;
  }
  return out;
}

function normAxis(axis: number, rank: number, what: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new GraphError(`${what}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly initializers: Initializer[] = [];
  readonly outputs: Array<{ name: string; value: Value }> = [];
  private nextId = 0;
  private readonly names = new Set<string>();
  /** cache of small constants so the same scalar is one initializer */
  private readonly constCache = new Map<string, Value>();
  /** inputs that carry dropout masks, with their drop probability; see `dropout` */
  readonly dropoutMasks: Array<{ value: Value; p: number }> = [];

  /**
   * `foldConstants`: whether ONNX Runtime folds the graph's constant subgraphs into new initializers when it loads
   * it. A graph whose work is all on constants (a text tower over fixed prompts) would be computed at load time,
   * keeping every intermediate in memory: such a graph says false. Default: fold where the graph has inputs.
   */
  constructor(
    readonly name = 'promptiqa',
    private readonly opts: { foldConstants?: boolean } = {},
  ) {}

  /** Whether ONNX Runtime should fold constants when it loads the graph as it is now (see the constructor). */
  get foldsConstants(): boolean {
    return this.opts.foldConstants ?? this.inputs.length > 0;
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new GraphError(`the name "${name}" is used twice in graph ${this.name}`);
    this.names.add(name);
    return name;
  }

  /**
   * A graph input, fed at every run (images, token ids, trainable parameters). `dynamicAxes`: axes whose size the
   * model leaves open (ONNX symbolic dimensions), so one loaded graph takes any size there; `shape` is then a
   * template the builder works with. Whether the graph really holds for other sizes is the caller's to check (see
   * `serialize`: graphs built at two sizes that serialise the same are one graph).
   */
  input(name: string, shape: readonly number[], dtype: DType = 'float32', dynamicAxes: readonly number[] = []): Value {
    const v = new Value(this, this.nextId++, 'input', [...shape], dtype, this.claim(name));
    this.inputs.push(v);
    if (dynamicAxes.length > 0) this.dynamicAxes.set(v, [...dynamicAxes]);
    return v;
  }

  /** The open axes of inputs made with `dynamicAxes`. */
  readonly dynamicAxes = new Map<Value, readonly number[]>();

  /** A frozen weight: stored in the model as an initializer, never differentiated. */
  weight(name: string, shape: readonly number[], data: TypedData, dtype: DType = 'float32'): Value {
    if (data.length !== shapeSize(shape))
      throw new GraphError(`weight "${name}": ${data.length} values do not fill shape ${formatShape(shape)}`);
    const v = new Value(this, this.nextId++, 'weight', [...shape], dtype, this.claim(name));
    this.initializers.push({ value: v, data });
    return v;
  }

  /** A small constant (shape operands, scalars). */
  constant(data: readonly number[] | TypedData, shape: readonly number[], dtype: DType = 'float32'): Value {
    const arr = toTyped(data, dtype);
    // small constants (scalars, shapes) are shared; the key of a large one would be a string of all its values
    const key =
      arr.length <= 64 ? `${dtype}|${shape.join(',')}|${Array.from(arr as ArrayLike<number | bigint>, String).join(',')}` : undefined;
    const cached = key === undefined ? undefined : this.constCache.get(key);
    if (cached) return cached;
    const v = new Value(this, this.nextId++, 'constant', [...shape], dtype, this.claim(`const_${this.nextId}`));
    this.initializers.push({ value: v, data: arr });
    if (key !== undefined) this.constCache.set(key, v);
    return v;
  }

  scalar(x: number, dtype: DType = 'float32'): Value {
    return this.constant([x], [], dtype);
  }

  ints(values: readonly number[]): Value {
    return this.constant(values, [values.length], 'int64');
  }

  /** Marks a value as a graph output under a name. */
  output(name: string, value: Value): void {
    this.claim(name);
    this.outputs.push({ name, value });
  }

  /** Adds a node; used by the op functions below and by grad rules. */
  addNode(
    op: OpType,
    inputs: readonly (Value | null)[],
    outs: ReadonlyArray<{ shape: readonly number[]; dtype: DType }>,
    attrs: Record<string, Attr> = {},
    domain = '',
  ): Value[] {
    for (const v of inputs) if (v && v.graph !== this) throw new GraphError(`${op}: operand ${v.name} belongs to another graph`);
    const outputs: Value[] = [];
    const node: Node = { op, inputs, outputs, attrs, domain };
    for (const o of outs) outputs.push(new Value(this, this.nextId++, 'node', [...o.shape], o.dtype, `t${this.nextId}`, node));
    this.nodes.push(node);
    return outputs;
  }

  add1(op: OpType, inputs: readonly (Value | null)[], shape: readonly number[], dtype: DType, attrs: Record<string, Attr> = {}): Value {
    return this.addNode(op, inputs, [{ shape, dtype }], attrs)[0]!;
  }
}

function toTyped(data: readonly number[] | TypedData, dtype: DType): TypedData {
  if (!Array.isArray(data)) return data as TypedData;
  const arr = data as readonly number[];
  switch (dtype) {
    case 'float32':
      return Float32Array.from(arr);
    case 'float64':
      return Float64Array.from(arr);
    case 'int64':
      return BigInt64Array.from(arr, (x) => BigInt(Math.trunc(x)));
    case 'int32':
      return Int32Array.from(arr);
    case 'bool':
      return Uint8Array.from(arr, (x) => (x ? 1 : 0));
    case 'float16':
      throw new GraphError('float16 constants must be given as Uint16Array bits');
  }
}

// ---------------------------------------------------------------------------------------------------
// Ops. Each checks its operands, infers the output shape and adds one ONNX node (or a few).

function sameDtype(op: OpType, a: Value, b: Value): void {
  if (a.dtype !== b.dtype) throw new GraphError(`${op}: dtypes differ (${a} and ${b})`);
}

function binary(op: 'Add' | 'Sub' | 'Mul' | 'Div', a: Value, b: Value | number): Value {
  const g = a.graph;
  const bv = typeof b === 'number' ? g.scalar(b, a.dtype) : b;
  sameDtype(op, a, bv);
  return g.add1(op, [a, bv], broadcastShapes(a.shape, bv.shape, op), a.dtype);
}

export const add = (a: Value, b: Value | number): Value => binary('Add', a, b);
export const sub = (a: Value, b: Value | number): Value => binary('Sub', a, b);
export const mul = (a: Value, b: Value | number): Value => binary('Mul', a, b);
export const div = (a: Value, b: Value | number): Value => binary('Div', a, b);
/** a ** p with a constant exponent */
export function pow(a: Value, p: number): Value {
  return a.graph.add1('Pow', [a, a.graph.scalar(p, a.dtype)], a.shape, a.dtype);
}

function compare(op: 'Greater' | 'Less', a: Value, b: Value | number): Value {
  const g = a.graph;
  const bv = typeof b === 'number' ? g.scalar(b, a.dtype) : b;
  sameDtype(op, a, bv);
  return g.add1(op, [a, bv], broadcastShapes(a.shape, bv.shape, op), 'bool');
}
export const greater = (a: Value, b: Value | number): Value => compare('Greater', a, b);
export const less = (a: Value, b: Value | number): Value => compare('Less', a, b);

function unary(op: 'Neg' | 'Exp' | 'Log' | 'Sqrt' | 'Tanh' | 'Sigmoid' | 'Relu' | 'Erf' | 'Abs' | 'Sign', a: Value): Value {
  if (!isFloat(a.dtype) && op !== 'Neg' && op !== 'Abs') throw new GraphError(`${op}: needs a floating-point operand, got ${a}`);
  return a.graph.add1(op, [a], a.shape, a.dtype);
}
export const neg = (a: Value): Value => unary('Neg', a);
export const exp = (a: Value): Value => unary('Exp', a);
export const log = (a: Value): Value => unary('Log', a);
export const sqrt = (a: Value): Value => unary('Sqrt', a);
export const tanh = (a: Value): Value => unary('Tanh', a);
export const sigmoid = (a: Value): Value => unary('Sigmoid', a);
export const relu = (a: Value): Value => unary('Relu', a);
export const erf = (a: Value): Value => unary('Erf', a);
export const abs = (a: Value): Value => unary('Abs', a);
export const sign = (a: Value): Value => unary('Sign', a);

/** QuickGELU as CLIP uses it: x * sigmoid(1.702 x). */
export function quickGelu(x: Value): Value {
  return mul(x, sigmoid(mul(x, 1.702)));
}

/** Exact GELU: 0.5 x (1 + erf(x / sqrt 2)). */
export function gelu(x: Value): Value {
  return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));
}

export function cast(a: Value, to: DType): Value {
  if (a.dtype === to) return a;
  return a.graph.add1('Cast', [a], a.shape, to, { to: { i: ONNX_DTYPE[to] } });
}

/** where(cond, a, b), broadcasting all three. */
export function where(cond: Value, a: Value, b: Value): Value {
  if (cond.dtype !== 'bool') throw new GraphError(`Where: condition must be bool, got ${cond}`);
  sameDtype('Where', a, b);
  const shape = broadcastShapes(broadcastShapes(cond.shape, a.shape, 'Where'), b.shape, 'Where');
  return a.graph.add1('Where', [cond, a, b], shape, a.dtype);
}

/** numpy matmul for operands of rank ≥ 2, batch dimensions broadcast. */
export function matmul(a: Value, b: Value): Value {
  sameDtype('MatMul', a, b);
  if (a.rank < 2 || b.rank < 2) throw new GraphError(`MatMul: operands must have rank ≥ 2, got ${a} and ${b}`);
  const [m, k] = a.shape.slice(-2) as [number, number];
  const [k2, n] = b.shape.slice(-2) as [number, number];
  if (k !== k2) throw new GraphError(`MatMul: inner dimensions differ: ${a} times ${b}`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), 'MatMul batch');
  return a.graph.add1('MatMul', [a, b], [...batch, m, n], a.dtype);
}

/** x·W^T + b with W stored [out, in] as PyTorch's Linear. */
export function linear(x: Value, weightT: Value, bias?: Value): Value {
  const y = matmul(x, weightT);
  return bias ? add(y, bias) : y;
}

/**
 * Reshape; one dimension may be -1 (the rest of the size). The -1 stays in the model, so a graph whose input has
 * open axes (`Graph.input`'s dynamicAxes) reshapes to whatever size comes.
 */
export function reshape(a: Value, shape: readonly number[]): Value {
  const known = shape.filter((d) => d !== -1);
  const prod = shapeSize(known);
  const out = shape.map((d) => (d === -1 ? a.size / prod : d));
  if (shape.filter((d) => d === -1).length > 1 || shapeSize(out) !== a.size || out.some((d) => !Number.isInteger(d))) {
    throw new GraphError(`Reshape: cannot reshape ${a} to ${formatShape(shape)}`);
  }
  if (out.every((d, i) => d === a.shape[i]) && out.length === a.rank) return a;
  return a.graph.add1('Reshape', [a, a.graph.ints(shape)], out, a.dtype);
}

export function transpose(a: Value, perm: readonly number[]): Value {
  if (perm.length !== a.rank || [...perm].sort((x, y) => x - y).some((p, i) => p !== i)) {
    throw new GraphError(`Transpose: ${formatShape(perm)} is not a permutation of ${a.rank} axes (${a})`);
  }
  if (perm.every((p, i) => p === i)) return a;
  return a.graph.add1(
    'Transpose',
    [a],
    perm.map((p) => a.shape[p]!),
    a.dtype,
    { perm: { ints: perm } },
  );
}

/** Swaps the last two axes. */
export function transposeLast(a: Value): Value {
  const perm = a.shape.map((_, i) => i);
  perm[a.rank - 1] = a.rank - 2;
  perm[a.rank - 2] = a.rank - 1;
  return transpose(a, perm);
}

export function concat(parts: readonly Value[], axis: number): Value {
  if (parts.length === 0) throw new GraphError('Concat: nothing to concatenate');
  if (parts.length === 1) return parts[0]!;
  const first = parts[0]!;
  const ax = normAxis(axis, first.rank, 'Concat');
  const shape = [...first.shape];
  shape[ax] = 0;
  for (const p of parts) {
    sameDtype('Concat', first, p);
    if (p.rank !== first.rank || p.shape.some((d, i) => i !== ax && d !== first.shape[i])) {
      throw new GraphError(`Concat on axis ${axis}: ${p} does not fit ${first}`);
    }
    shape[ax] += p.shape[ax]!;
  }
  return first.graph.add1('Concat', parts, shape, first.dtype, { axis: { i: ax } });
}

/** x[start:end] along one axis (step 1). */
export function slice(a: Value, axis: number, start: number, end: number): Value {
  const ax = normAxis(axis, a.rank, 'Slice');
  const dim = a.shape[ax]!;
  if (start < 0 || end > dim || start >= end) throw new GraphError(`Slice: [${start}:${end}] is out of range for axis ${axis} of ${a}`);
  if (start === 0 && end === dim) return a;
  const g = a.graph;
  const shape = [...a.shape];
  shape[ax] = end - start;
  return g.add1('Slice', [a, g.ints([start]), g.ints([end]), g.ints([ax])], shape, a.dtype);
}

/** Zero padding: pads[i] = [before, after] for each axis. */
export function pad(a: Value, pads: ReadonlyArray<readonly [number, number]>): Value {
  if (pads.length !== a.rank) throw new GraphError(`Pad: ${pads.length} pad pairs for ${a}`);
  if (pads.every(([b, e]) => b === 0 && e === 0)) return a;
  const g = a.graph;
  const flat = [...pads.map((p) => p[0]), ...pads.map((p) => p[1])];
  const shape = a.shape.map((d, i) => d + pads[i]![0] + pads[i]![1]);
  return g.add1('Pad', [a, g.ints(flat), g.scalar(0, a.dtype)], shape, a.dtype, { mode: { s: 'constant' } });
}

/** Broadcasts to a larger shape. */
export function expand(a: Value, shape: readonly number[]): Value {
  const out = broadcastShapes(a.shape, shape, 'Expand');
  if (out.length !== shape.length || out.some((d, i) => d !== shape[i]))
    throw new GraphError(`Expand: ${a} does not expand to ${formatShape(shape)}`);
  if (out.length === a.rank && out.every((d, i) => d === a.shape[i])) return a;
  return a.graph.add1('Expand', [a, a.graph.ints(shape)], shape, a.dtype);
}

/** Gathers rows of `a` along an axis with int64 indices. */
export function gather(a: Value, indices: Value, axis = 0): Value {
  if (indices.dtype !== 'int64' && indices.dtype !== 'int32') throw new GraphError(`Gather: indices must be integers, got ${indices}`);
  const ax = normAxis(axis, a.rank, 'Gather');
  const shape = [...a.shape.slice(0, ax), ...indices.shape, ...a.shape.slice(ax + 1)];
  return a.graph.add1('Gather', [a, indices], shape, a.dtype, { axis: { i: ax } });
}

function reduce(op: 'ReduceSum' | 'ReduceMean' | 'ReduceMax', a: Value, axes: readonly number[], keepDims: boolean): Value {
  const axs = [...new Set(axes.map((x) => normAxis(x, a.rank, op)))].sort((x, y) => x - y);
  if (axs.length === 0) return a;
  const shape = keepDims ? a.shape.map((d, i) => (axs.includes(i) ? 1 : d)) : a.shape.filter((_, i) => !axs.includes(i));
  const g = a.graph;
  return g.add1(op, [a, g.ints(axs)], shape, a.dtype, { keepdims: { i: keepDims ? 1 : 0 } });
}
export const reduceSum = (a: Value, axes: readonly number[], keepDims = false): Value => reduce('ReduceSum', a, axes, keepDims);
export const reduceMean = (a: Value, axes: readonly number[], keepDims = false): Value => reduce('ReduceMean', a, axes, keepDims);
export const reduceMax = (a: Value, axes: readonly number[], keepDims = false): Value => reduce('ReduceMax', a, axes, keepDims);

/** Sum of every element, as a scalar. */
export function sumAll(a: Value): Value {
  return reshape(
    reduceSum(
      a,
      a.shape.map((_, i) => i),
      false,
    ),
    [],
  );
}

export function meanAll(a: Value): Value {
  return reshape(
    reduceMean(
      a,
      a.shape.map((_, i) => i),
      false,
    ),
    [],
  );
}

export function softmax(a: Value, axis = -1): Value {
  const ax = normAxis(axis, a.rank, 'Softmax');
  return a.graph.add1('Softmax', [a], a.shape, a.dtype, { axis: { i: ax } });
}

/**
 * Layer normalisation over the last axis. The node also returns the mean and inverse standard deviation,
 * which the gradient rule reuses instead of recomputing them.
 */
export function layerNorm(x: Value, scale: Value, bias: Value, eps = 1e-5): Value {
  const d = x.shape[x.rank - 1]!;
  if (scale.rank !== 1 || scale.shape[0] !== d || bias.rank !== 1 || bias.shape[0] !== d) {
    throw new GraphError(`LayerNormalization: scale ${scale} and bias ${bias} must be [${d}] for ${x}`);
  }
  if (x.dtype === 'float64') {
    // ONNX Runtime has no float64 LayerNormalization kernel: compose it (used by float64 gradient checks)
    const centred = sub(x, reduceMean(x, [-1], true));
    const invStd = div(x.graph.scalar(1, 'float64'), sqrt(add(reduceMean(mul(centred, centred), [-1], true), eps)));
    return add(mul(mul(centred, invStd), scale), bias);
  }
  // statistics are computed (and returned) in float32, also for float16 inputs
  const statShape = [...x.shape.slice(0, -1), 1];
  const statType = 'float32';
  const [y] = x.graph.addNode(
    'LayerNormalization',
    [x, scale, bias],
    [
      { shape: x.shape, dtype: x.dtype },
      { shape: statShape, dtype: statType },
      { shape: statShape, dtype: statType },
    ],
    { axis: { i: -1 }, epsilon: { f: eps }, stash_type: { i: 1 } },
  );
  return y!;
}

/** L2 normalisation along the last axis. */
export function l2Normalize(x: Value, eps = 0): Value {
  const sq = reduceSum(mul(x, x), [-1], true);
  return div(x, eps ? sqrt(add(sq, eps)) : sqrt(sq));
}

export interface ConvOptions {
  /** the same stride along both axes (default 1) */
  stride?: number;
  /** zero padding on every side (default 0) */
  padding?: number;
  /** spacing of the kernel taps (default 1); the kernel gradient of a strided conv uses it */
  dilation?: number;
  /** one value per output channel */
  bias?: Value;
}

/**
 * 2-D convolution (NCHW, group 1) as PyTorch's Conv2d: output size floor((H + 2·pad − dil·(k−1) − 1) / stride) + 1.
 * ONNX Runtime runs it as im2col + GEMM. The third argument may be the stride alone.
 */
export function conv2d(x: Value, w: Value, options: number | ConvOptions = {}): Value {
  const o = typeof options === 'number' ? { stride: options } : options;
  const [stride, padding, dilation] = [o.stride ?? 1, o.padding ?? 0, o.dilation ?? 1];
  sameDtype('Conv', x, w);
  if (x.rank !== 4 || w.rank !== 4 || x.shape[1] !== w.shape[1]) throw new GraphError(`Conv: input ${x} and kernel ${w} do not fit`);
  if (![stride, dilation].every((v) => Number.isInteger(v) && v >= 1) || !Number.isInteger(padding) || padding < 0) {
    throw new GraphError(`Conv: stride ${stride}, padding ${padding} and dilation ${dilation} must be integers (stride, dilation ≥ 1)`);
  }
  const [kh, kw] = [w.shape[2]!, w.shape[3]!];
  const oh = Math.floor((x.shape[2]! + 2 * padding - dilation * (kh - 1) - 1) / stride) + 1;
  const ow = Math.floor((x.shape[3]! + 2 * padding - dilation * (kw - 1) - 1) / stride) + 1;
  if (oh < 1 || ow < 1) throw new GraphError(`Conv: input ${x} is smaller than kernel ${w} (padding ${padding})`);
  const inputs = [x, w];
  if (o.bias) {
    sameDtype('Conv', x, o.bias);
    if (o.bias.rank !== 1 || o.bias.shape[0] !== w.shape[0]) throw new GraphError(`Conv: bias ${o.bias} must be [${w.shape[0]}]`);
    inputs.push(o.bias);
  }
  return x.graph.add1('Conv', inputs, [x.shape[0]!, w.shape[0]!, oh, ow], x.dtype, {
    strides: { ints: [stride, stride] },
    pads: { ints: [padding, padding, padding, padding] },
    dilations: { ints: [dilation, dilation] },
    kernel_shape: { ints: [kh, kw] },
  });
}

/**
 * The transpose of `conv2d` with the same kernel [O, C, k, k] (the gradient of a conv with respect to its
 * input): g [B, O, oh, ow] → [B, C, H, W], where H, W name the conv input's size (the floor in the conv's
 * output size loses rows that `output_padding` gives back).
 */
export function convTranspose2d(g: Value, w: Value, stride: number, padding: number, size: readonly [number, number]): Value {
  sameDtype('ConvTranspose', g, w);
  if (g.rank !== 4 || w.rank !== 4 || g.shape[1] !== w.shape[0])
    throw new GraphError(`ConvTranspose: input ${g} and kernel ${w} do not fit`);
  const [kh, kw] = [w.shape[2]!, w.shape[3]!];
  const extra = [size[0] + 2 * padding - kh - stride * (g.shape[2]! - 1), size[1] + 2 * padding - kw - stride * (g.shape[3]! - 1)];
  if (extra.some((e) => e < 0 || e >= stride))
    throw new GraphError(`ConvTranspose: ${g} does not come from a conv of a ${formatShape(size)} input`);
  return g.graph.add1('ConvTranspose', [g, w], [g.shape[0]!, w.shape[1]!, size[0], size[1]], g.dtype, {
    strides: { ints: [stride, stride] },
    pads: { ints: [padding, padding, padding, padding] },
    output_padding: { ints: extra },
    kernel_shape: { ints: [kh, kw] },
  });
}

/**
 * Average pooling (NCHW) with kernel = stride = k, no padding, rows and columns that do not fill a window
 * dropped: PyTorch's nn.AvgPool2d(k).
 */
export function avgPool2d(x: Value, k: number): Value {
  if (x.rank !== 4) throw new GraphError(`AveragePool: input must be NCHW, got ${x}`);
  if (!isFloat(x.dtype)) throw new GraphError(`AveragePool: needs a floating-point operand, got ${x}`);
  const [oh, ow] = [Math.floor(x.shape[2]! / k), Math.floor(x.shape[3]! / k)];
  if (!Number.isInteger(k) || k < 1 || oh < 1 || ow < 1) throw new GraphError(`AveragePool: window ${k} does not fit ${x}`);
  if (k === 1) return x;
  return x.graph.add1('AveragePool', [x], [x.shape[0]!, x.shape[1]!, oh, ow], x.dtype, {
    kernel_shape: { ints: [k, k] },
    strides: { ints: [k, k] },
  });
}

/** [B, C, H, W] → [B, (H/p)(W/p), C·p·p], patches in row-major order, channels-major inside a patch (as Conv weights). */
export function patchify(x: Value, p: number): Value {
  const [b, c, h, w] = x.shape as [number, number, number, number];
  if (x.rank !== 4 || h % p || w % p) throw new GraphError(`patchify: ${x} is not divisible into ${p}×${p} patches`);
  const t = reshape(x, [b, c, h / p, p, w / p, p]);
  const u = transpose(t, [0, 2, 4, 1, 3, 5]);
  return reshape(u, [b, (h / p) * (w / p), c * p * p]);
}

/**
 * Dropout whose mask is a graph input: the caller fills it from its seeded generator (values 0 or
 * 1/(1-p)) when training and with ones when not, so a run is reproducible and the gradient uses the
 * very mask of the forward pass.
 */
export function dropout(x: Value, p: number, name: string): Value {
  if (p <= 0) return x;
  if (p >= 1) throw new GraphError(`dropout: probability ${p} must be below 1`);
  const mask = x.graph.input(name, x.shape, x.dtype);
  x.graph.dropoutMasks.push({ value: mask, p });
  return mul(x, mask);
}

/** Identity: gives a value a node of its own (e.g. to output an input under another name). */
export function identity(a: Value): Value {
  return a.graph.add1('Identity', [a], a.shape, a.dtype);
}

/** ONNX TensorProto data types. */
export const ONNX_DTYPE: Record<DType, number> = { float32: 1, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };

/**
 * The matrix-product work of a graph as it is built (multiply-accumulates × 2): every MatMul, Conv and
 * ConvTranspose, from the static shapes. What a benchmark divides by the time to tell how close to the machine's
 * peak a graph runs; element-wise work is left out, as in `visionFlops`.
 */
export function matmulFlops(g: Graph): number {
  let flops = 0;
  for (const n of g.nodes) {
    const [a, b] = n.inputs;
    const out = n.outputs[0]!;
    if (n.op === 'MatMul') flops += 2 * out.size * a!.shape[a!.rank - 1]!;
    // each output value sums in-channels/group × kernel products; a transposed conv sums the same per input value
    else if (n.op === 'Conv') flops += (2 * out.size * b!.size) / b!.shape[0]!;
    else if (n.op === 'ConvTranspose') flops += (2 * a!.size * b!.size) / b!.shape[0]!;
  }
  return flops;
}
