/** Puts every weight into a graph once, however many encoders use it. */
import { type Value, type Graph } from '../graph/graph.js';

export class WeightBank {
  private readonly values = new Map<Float32Array, Value>();
  private counter = 0;

  constructor(readonly graph: Graph) {}

  get(name: string, data: Float32Array, shape: readonly number[]): Value {
    let v = this.values.get(data);
    if (!v) {
      v = this.graph.weight(`${name}_${this.counter++}`, shape, data);
      this.values.set(data, v);
    }
    return v;
  }
}
