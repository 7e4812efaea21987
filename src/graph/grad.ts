/**
 * Reverse-mode differentiation over a Graph. Each op has a vector-Jacobian rule written with the same
 * builder, so the gradient is more nodes in the same graph and ONNX Runtime plans and runs forward and
 * backward together. Only nodes that lie on a path from a requested input to the loss are differentiated:
 * frozen weights get no gradient and cost no gradient work.
 */
import {
  type Node,
  type OpType,
  type Value,
  GraphError,
  add,
  sub,
  mul,
  div,
  neg,
  exp,
  matmul,
  transposeLast,
  transpose,
  reshape,
  reduceSum,
  reduceMean,
  expand,
  slice,
  pad,
  where,
  cast,
  pow,
  sign,
  greater,
  shapeSize,
  isFloat,
  conv2d,
  convTranspose2d,
} from './graph.js';

/** Sums `g` over the axes that broadcasting added or stretched, so it gets `shape` back. */
export function unbroadcast(g: Value, shape: readonly number[]): Value {
  if (g.rank === shape.length && g.shape.every((d, i) => d === shape[i])) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && g.shape[i] !== 1) axes.push(i);
  }
  return reshape(reduceSum(g, axes, true), shape);
}

type Rule = (node: Node, gOut: readonly (Value | null)[], need: readonly boolean[]) => (Value | null)[];

/** An op no gradient flows through, with the reason the error gives when one would have to. */
interface NotDifferentiable {
  readonly notDifferentiable: string;
}
const notDifferentiable = (why: string): NotDifferentiable => ({ notDifferentiable: why });

const x0 = (n: Node): Value => n.inputs[0]!;
const x1 = (n: Node): Value => n.inputs[1]!;
const y0 = (n: Node): Value => n.outputs[0]!;

/**
 * One entry for every op graph.ts can emit (the type demands it): a rule, or the reason there is none.
 * gOut[0] is the gradient of the first output.
 */
const RULES: { readonly [Op in OpType]: Rule | NotDifferentiable } = {
  Identity: (_n, [g]) => [g!],
  Add: (n, [g]) => [unbroadcast(g!, x0(n).shape), unbroadcast(g!, x1(n).shape)],
  Sub: (n, [g], need) => [unbroadcast(g!, x0(n).shape), need[1] ? unbroadcast(neg(g!), x1(n).shape) : null],
  Mul: (n, [g], need) => [
    need[0] ? unbroadcast(mul(g!, x1(n)), x0(n).shape) : null,
    need[1] ? unbroadcast(mul(g!, x0(n)), x1(n).shape) : null,
  ],
  Div: (n, [g], need) => [
    need[0] ? unbroadcast(div(g!, x1(n)), x0(n).shape) : null,
    need[1] ? unbroadcast(neg(div(mul(g!, y0(n)), x1(n))), x1(n).shape) : null,
  ],
  Pow: (n, [g], need) => {
    if (need[1]) throw new GraphError('Pow: the exponent is not differentiable here (use a constant exponent)');
    const p = n.inputs[1]!;
    // d/dx x^p = p x^(p-1); p is a scalar constant, so read it from the graph's initializers
    const init = p.graph.initializers.find((i) => i.value === p);
    if (!init) throw new GraphError('Pow: the exponent must be a constant');
    const e = Number(init.data[0]);
    return [mul(g!, mul(pow(x0(n), e - 1), e)), null];
  },
  Neg: (_n, [g]) => [neg(g!)],
  Exp: (n, [g]) => [mul(g!, y0(n))],
  Log: (n, [g]) => [div(g!, x0(n))],
  Sqrt: (n, [g]) => [div(mul(g!, 0.5), y0(n))],
  Tanh: (n, [g]) => [mul(g!, sub(x0(n).graph.scalar(1, g!.dtype), mul(y0(n), y0(n))))],
  Sigmoid: (n, [g]) => [mul(g!, mul(y0(n), sub(x0(n).graph.scalar(1, g!.dtype), y0(n))))],
  Relu: (n, [g]) => [mul(g!, cast(greater(x0(n), 0), g!.dtype))],
  Abs: (n, [g]) => [mul(g!, sign(x0(n)))],
  Erf: (n, [g]) => [mul(g!, mul(exp(neg(mul(x0(n), x0(n)))), 2 / Math.sqrt(Math.PI)))],
  Cast: (n, [g]) => [isFloat(x0(n).dtype) ? cast(g!, x0(n).dtype) : null],
  Where: (n, [g], need) => {
    const zero = n.inputs[1]!.graph.scalar(0, g!.dtype);
    const c = n.inputs[0]!;
    return [
      null,
      need[1] ? unbroadcast(where(c, g!, zero), n.inputs[1]!.shape) : null,
      need[2] ? unbroadcast(where(c, zero, g!), n.inputs[2]!.shape) : null,
    ];
  },
  MatMul: (n, [g], need) => {
    const a = x0(n);
    const b = x1(n);
    let ga: Value | null = null;
    let gb: Value | null = null;
    if (need[0]) ga = unbroadcast(matmul(g!, transposeLast(b)), a.shape);
    if (need[1]) {
      if (b.rank === 2 && a.rank > 2) {
        // a [..., M, K] · b [K, N]: fold the batch into M so the weight gradient is one matrix product
        const k = a.shape[a.rank - 1]!;
        const nn = b.shape[1]!;
        gb = matmul(transposeLast(reshape(a, [-1, k])), reshape(g!, [-1, nn]));
      } else {
        gb = unbroadcast(matmul(transposeLast(a), g!), b.shape);
      }
    }
    return [ga, gb];
  },
  Transpose: (n, [g]) => {
    const perm = (n.attrs.perm as { ints: number[] }).ints;
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return [transpose(g!, inv)];
  },
  Reshape: (n, [g]) => [reshape(g!, x0(n).shape), null],
  Expand: (n, [g]) => [unbroadcast(g!, x0(n).shape), null],
  Concat: (n, [g], need) => {
    const axis = (n.attrs.axis as { i: number }).i;
    let start = 0;
    return n.inputs.map((v, i) => {
      const len = v!.shape[axis]!;
      const part = need[i] ? slice(g!, axis, start, start + len) : null;
      start += len;
      return part;
    });
  },
  Slice: (n, [g]) => {
    // inputs: data, starts, ends, axes (single axis, step 1: see `slice`)
    const data = x0(n);
    const out = y0(n);
    const axis = constInts(n.inputs[3]!)[0]!;
    const start = constInts(n.inputs[1]!)[0]!;
    const pads = data.shape.map((d, i): [number, number] => (i === axis ? [start, d - start - out.shape[i]!] : [0, 0]));
    return [pad(g!, pads), null, null, null];
  },
  Pad: (n, [g]) => {
    const flat = constInts(n.inputs[1]!);
    const r = x0(n).rank;
    let v = g!;
    for (let i = 0; i < r; i++) v = slice(v, i, flat[i]!, flat[i]! + x0(n).shape[i]!);
    return [v, null, null];
  },
  ReduceSum: (n, [g]) => {
    const keep = (n.attrs.keepdims as { i: number }).i === 1;
    const axes = constInts(n.inputs[1]!);
    const kshape = x0(n).shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const gk = keep ? g! : reshape(g!, kshape);
    return [expand(gk, x0(n).shape), null];
  },
  ReduceMean: (n, [g]) => {
    const keep = (n.attrs.keepdims as { i: number }).i === 1;
    const axes = constInts(n.inputs[1]!);
    const count = axes.reduce((a, ax) => a * x0(n).shape[ax]!, 1);
    const kshape = x0(n).shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const gk = keep ? g! : reshape(g!, kshape);
    return [expand(mul(gk, 1 / count), x0(n).shape), null];
  },
  Softmax: (n, [g]) => {
    const axis = (n.attrs.axis as { i: number }).i;
    const y = y0(n);
    const dot = reduceSum(mul(g!, y), [axis], true);
    return [mul(y, sub(g!, dot))];
  },
  LayerNormalization: (n, [g], need) => {
    const x = x0(n);
    const scale = n.inputs[1]!;
    const [, m, s] = n.outputs as [Value, Value, Value];
    const mean = cast(m, x.dtype);
    const invStd = cast(s, x.dtype);
    const xhat = mul(sub(x, mean), invStd);
    let gx: Value | null = null;
    if (need[0]) {
      const dxhat = mul(g!, scale);
      const m1 = reduceMean(dxhat, [-1], true);
      const m2 = reduceMean(mul(dxhat, xhat), [-1], true);
      gx = mul(invStd, sub(sub(dxhat, m1), mul(xhat, m2)));
    }
    const lead = x.shape.slice(0, -1).map((_, i) => i);
    const gScale = need[1] ? reduceSum(mul(g!, xhat), lead, false) : null;
    const gBias = need[2] ? reduceSum(g!, lead, false) : null;
    return [gx, gScale, gBias];
  },
  Gather: (n, [g], need) => {
    // gradient of a row lookup with constant indices: a one-hot matrix product (tables here are small
    // trainable ones; frozen embedding tables never get here)
    if (!need[0]) return [null, null];
    const data = x0(n);
    const axis = (n.attrs.axis as { i: number }).i;
    if (axis !== 0) throw new GraphError('Gather: gradients are implemented for axis 0');
    const idx = constInts(n.inputs[1]!);
    const rows = data.shape[0]!;
    const oneHot = new Float64Array(rows * idx.length);
    idx.forEach((r, j) => (oneHot[(r < 0 ? r + rows : r) * idx.length + j] = 1));
    const oh = data.graph.constant(g!.dtype === 'float64' ? oneHot : Float32Array.from(oneHot), [rows, idx.length], g!.dtype);
    const rest = data.shape.slice(1);
    const g2 = reshape(g!, [idx.length, shapeSize(rest)]);
    return [reshape(matmul(oh, g2), data.shape), null];
  },
  // comparisons give bool, which never carries a gradient; the others are piecewise constant or
  // not needed by any trained graph yet
  Greater: notDifferentiable('its output is boolean'),
  Less: notDifferentiable('its output is boolean'),
  Sign: notDifferentiable('no gradient rule (it is piecewise constant)'),
  ReduceMax: notDifferentiable('no gradient rule'),
  Conv: (n, [g], need) => {
    const [x, w] = [x0(n), x1(n)];
    const stride = (n.attrs.strides as { ints: number[] }).ints[0]!;
    const padding = (n.attrs.pads as { ints: number[] }).ints[0]!;
    const dilation = (n.attrs.dilations as { ints: number[] }).ints[0]!;
    if (dilation !== 1) throw new GraphError('Conv: gradients are implemented for dilation 1');
    const [h, wd] = [x.shape[2]!, x.shape[3]!];
    // input: the transposed conv, one ONNX Runtime kernel (col2im + GEMM, as fast as the forward conv)
    const gx = need[0] ? convTranspose2d(g!, w, stride, padding, [h, wd]) : null;
    let gw: Value | null = null;
    if (need[1]) {
      // kernel: gW[o,c,i,j] = Σ_b,y,x g[b,o,y,x]·xpad[b,c,s·y+i,s·x+j] is a conv of the input (channels as batch)
      // with the output gradient (batch as channels) spread by the stride; rows the floor dropped are cut off
      const [k1, k2] = [w.shape[2]!, w.shape[3]!];
      const full = conv2d(transpose(x, [1, 0, 2, 3]), transpose(g!, [1, 0, 2, 3]), { padding, dilation: stride });
      gw = transpose(slice(slice(full, 2, 0, k1), 3, 0, k2), [1, 0, 2, 3]);
    }
    const gb = need[2] ? reduceSum(g!, [0, 2, 3], false) : null;
    return n.inputs.length > 2 ? [gx, gw, gb] : [gx, gw];
  },
  ConvTranspose: notDifferentiable('it is only used as the gradient of Conv (no second derivatives)'),
  AveragePool: (n, [g]) => {
    // each output averages its own k×k window: spread g/k² over it, zeros where the floor dropped rows
    const x = x0(n);
    const k = (n.attrs.kernel_shape as { ints: number[] }).ints[0]!;
    const [b, c, oh, ow] = g!.shape as [number, number, number, number];
    const spread = reshape(expand(reshape(g!, [b, c, oh, 1, ow, 1]), [b, c, oh, k, ow, k]), [b, c, oh * k, ow * k]);
    const pads: [number, number][] = [
      [0, 0],
      [0, 0],
      [0, x.shape[2]! - oh * k],
      [0, x.shape[3]! - ow * k],
    ];
    return [pad(mul(spread, 1 / (k * k)), pads)];
  },
};

/** Reads an int64 constant's values (shape operands). */
function constInts(v: Value): number[] {
  const init = v.graph.initializers.find((i) => i.value === v);
  if (!init) throw new GraphError(`expected a constant for ${v}`);
  return Array.from(init.data as BigInt64Array, Number);
}

/**
 * Adds to the graph the gradient of scalar `loss` with respect to each of `wrt` (graph inputs or any
 * values). Returns one gradient value per `wrt` entry; an entry the loss does not depend on gets zeros.
 */
export function gradients(loss: Value, wrt: readonly Value[]): Value[] {
  const g = loss.graph;
  if (loss.size !== 1 || !isFloat(loss.dtype)) throw new GraphError(`gradients: the loss must be a floating-point scalar, got ${loss}`);
  const nodes = [...g.nodes];

  // values that depend on a wrt entry
  const dependsOnWrt = new Set<Value>(wrt);
  for (const node of nodes) {
    if (node.inputs.some((v) => v && dependsOnWrt.has(v))) for (const o of node.outputs) dependsOnWrt.add(o);
  }
  // nodes whose outputs the loss depends on
  const reachesLoss = new Set<Value>([loss]);
  const active: Node[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i]!;
    if (!node.outputs.some((o) => reachesLoss.has(o))) continue;
    if (!node.outputs.some((o) => dependsOnWrt.has(o))) continue;
    active.push(node);
    for (const v of node.inputs) if (v) reachesLoss.add(v);
  }

  const grads = new Map<Value, Value>();
  const accumulate = (v: Value, d: Value): void => {
    const prev = grads.get(v);
    grads.set(v, prev ? add(prev, d) : d);
  };
  grads.set(loss, reshape(g.scalar(1, loss.dtype), loss.shape));

  for (const node of active) {
    const gOut = node.outputs.map((o) => grads.get(o) ?? null);
    if (gOut.every((x) => x === null)) continue;
    const rule = RULES[node.op];
    if (typeof rule !== 'function') throw new GraphError(`${node.op} is not differentiable: ${rule.notDifferentiable}`);
    const need = node.inputs.map((v) => !!v && dependsOnWrt.has(v) && isFloat(v.dtype));
    // rules read gOut[0]; outputs other than the first (LayerNorm statistics) carry no gradient here
    if (gOut[0] === null) continue;
    const gin = rule(node, gOut, need);
    gin.forEach((d, i) => {
      const v = node.inputs[i];
      if (d && v && need[i]) {
        if (d.shape.length !== v.shape.length || d.shape.some((x, j) => x !== v.shape[j])) {
          throw new GraphError(`gradient rule of ${node.op} gave ${d} for ${v}`);
        }
        accumulate(v, d);
      }
    });
  }
  return wrt.map((v) => grads.get(v) ?? expand(g.scalar(0, v.dtype), v.shape));
}
