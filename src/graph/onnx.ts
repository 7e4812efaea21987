/**
 * Serialises a Graph to an ONNX ModelProto. Large initializers are kept out of the protobuf as ONNX
 * external data held in memory (one buffer per weight, handed to ONNX Runtime with the session options),
 * so models past protobuf's 2 GB limit (ViT-L) load, and no weight is copied into the model bytes.
 */
import onnxProto from 'onnx-proto';
import { type Graph, type Value, type TypedData, ONNX_DTYPE } from './graph.js';

const { onnx } = onnxProto;

export const OPSET = 18;
/** Initializers at least this large go to external data. */
const EXTERNAL_MIN_BYTES = 1024;

export interface SerializedModel {
  bytes: Uint8Array;
  /** in-memory external data files, for `SessionOptions.externalData` */
  externalData: Array<{ path: string; data: Uint8Array }>;
  /** the ONNX names of graph inputs and outputs */
  inputNames: string[];
  outputNames: string[];
}

function bytesOf(data: TypedData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** `open`: axes left as symbolic dimensions (`${name}_${axis}`). */
function valueInfo(name: string, v: Value, open: readonly number[] = []): onnxProto.onnx.IValueInfoProto {
  const dim = v.shape.map((d, axis) => (open.includes(axis) ? { dimParam: `${name}_${axis}` } : { dimValue: d }));
  return { name, type: { tensorType: { elemType: ONNX_DTYPE[v.dtype], shape: { dim } } } };
}

export function serialize(graph: Graph): SerializedModel {
  const names = new Map<Value, string>();
  const nameOf = (v: Value): string => names.get(v) ?? v.name;

  const extraNodes: onnxProto.onnx.INodeProto[] = [];
  const outputs: onnxProto.onnx.IValueInfoProto[] = [];
  const usedAsOutput = new Set<Value>();
  for (const { name, value } of graph.outputs) {
    // a node output used once as a graph output simply takes the output's name; anything else
    // (an input, a weight, a value output twice) gets an Identity
    if (value.kind === 'node' && !usedAsOutput.has(value)) {
      names.set(value, name);
    } else {
      extraNodes.push({ opType: 'Identity', input: [nameOf(value)], output: [name], name: `out_${name}` });
    }
    usedAsOutput.add(value);
    outputs.push(valueInfo(name, value));
  }

  const nodes: onnxProto.onnx.INodeProto[] = graph.nodes.map((n, i) => ({
    opType: n.op,
    domain: n.domain || undefined,
    name: `${n.op}_${i}`,
    input: n.inputs.map((v) => (v ? nameOf(v) : '')),
    output: n.outputs.map(nameOf),
    attribute: Object.entries(n.attrs).map(([name, a]) => {
      const T = onnx.AttributeProto.AttributeType;
      if ('i' in a) return { name, type: T.INT, i: a.i };
      if ('f' in a) return { name, type: T.FLOAT, f: a.f };
      if ('s' in a) return { name, type: T.STRING, s: new TextEncoder().encode(a.s) };
      if ('ints' in a) return { name, type: T.INTS, ints: [...a.ints] };
      return { name, type: T.FLOATS, floats: [...a.floats] };
    }),
  }));

  const externalData: SerializedModel['externalData'] = [];
  const initializer: onnxProto.onnx.ITensorProto[] = graph.initializers.map(({ value, data }) => {
    const t: onnxProto.onnx.ITensorProto = { name: nameOf(value), dims: [...value.shape], dataType: ONNX_DTYPE[value.dtype] };
    const raw = bytesOf(data);
    if (raw.byteLength >= EXTERNAL_MIN_BYTES) {
      const path = `w${externalData.length}.bin`;
      externalData.push({ path, data: raw });
      t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      t.externalData = [
        { key: 'location', value: path },
        { key: 'offset', value: '0' },
        { key: 'length', value: String(raw.byteLength) },
      ];
    } else {
      t.rawData = raw;
    }
    return t;
  });

  const model = onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'promptiqa',
    opsetImport: [{ domain: '', version: OPSET }],
    graph: {
      name: graph.name,
      node: [...nodes, ...extraNodes],
      input: graph.inputs.map((v) => valueInfo(v.name, v, graph.dynamicAxes.get(v))),
      output: outputs,
      initializer,
    },
  });
  return {
    bytes: onnx.ModelProto.encode(model).finish(),
    externalData,
    inputNames: graph.inputs.map((v) => v.name),
    outputNames: graph.outputs.map((o) => o.name),
  };
}
