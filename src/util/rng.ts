/**
 * A small seeded random number generator (SplitMix64 reduced to 32-bit state pairs, i.e. sfc32 seeded by
 * splitmix32). Every random choice in promptiqa (splits, crops, initialisation, shuffles, dropout seeds)
 * goes through one of these so that a seed makes a run reproducible. The state is four 32-bit words and
 * can be saved and restored exactly.
 */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number | readonly number[] = 0) {
    if (typeof seed === 'number') {
      let s = seed >>> 0;
      const next = (): number => {
        s = (s + 0x9e3779b9) >>> 0;
        let z = s;
        z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
        z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
        return (z ^ (z >>> 16)) >>> 0;
      };
      this.a = next();
      this.b = next();
      this.c = next();
      this.d = next();
      for (let i = 0; i < 12; i++) this.nextUint32();
    } else {
      if (seed.length !== 4) throw new Error('Rng state must be four 32-bit words');
      [this.a, this.b, this.c, this.d] = seed.map((v) => v >>> 0) as [number, number, number, number];
    }
  }

  /** The generator's state, to restore it later with `new Rng(state)`. */
  state(): number[] {
    return [this.a, this.b, this.c, this.d];
  }

  /**
   * A generator for one purpose at one point of a run (`Rng.at(seed, 'step', epoch, s)`), independent of
   * what ran before: a resumed run draws the same numbers as an uninterrupted one.
   */
  static at(seed: number, ...labels: (string | number)[]): Rng {
    let h = (seed >>> 0) ^ 0x9e3779b9;
    for (const ch of labels.join('/')) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
    return new Rng(h);
  }

  nextUint32(): number {
    // sfc32
    const t = (((this.a + this.b) >>> 0) + this.d) >>> 0;
    this.d = (this.d + 1) >>> 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) >>> 0;
    this.c = ((this.c << 21) | (this.c >>> 11)) >>> 0;
    this.c = (this.c + t) >>> 0;
    return t;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    let u = this.uniform();
    while (u <= 1e-12) u = this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Shuffles an array in place (Fisher–Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}
