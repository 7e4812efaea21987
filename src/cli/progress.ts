/**
 * Progress bars on stderr (items, rate, time left), drawn only when stderr is a terminal, CI is unset
 * and --quiet was not given; otherwise every method is a no-op and notes are plain lines (or nothing
 * with --quiet). Lines written while a bar is shown go above it.
 */
import cliProgress from 'cli-progress';
import { type CliIo, wantsProgress } from './io.js';

export interface Progress {
  /** Starts (or restarts) the bar at 0 of `total`. */
  start(total: number, label: string): void;
  /** Sets the count done; `info` is shown after the bar (e.g. the loss). */
  update(done: number, info?: string): void;
  increment(info?: string): void;
  /** A line on stderr above the bar; suppressed by --quiet unless `always`. */
  note(line: string, always?: boolean): void;
  stop(): void;
}

export function createProgress(io: CliIo, quiet: boolean | undefined): Progress {
  if (!wantsProgress(io, quiet)) {
    return {
      start: () => undefined,
      update: () => undefined,
      increment: () => undefined,
      note: (line, always) => {
        if (always || !quiet) io.stderr(line.endsWith('\n') ? line : line + '\n');
      },
      stop: () => undefined,
    };
  }
  const makeMulti = (): cliProgress.MultiBar =>
    new cliProgress.MultiBar(
      {
        stream: process.stderr,
        format: '{label} [{bar}] {value}/{total} | {rate} | {eta_formatted} left {info}',
        barsize: 30,
        hideCursor: true,
        clearOnComplete: true,
        etaBuffer: 50,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
  let multi: cliProgress.MultiBar | undefined;
  let bar: cliProgress.SingleBar | undefined;
  let started = 0;
  let done = 0;
  const payload = (info?: string): Record<string, string> => {
    const secs = (Date.now() - started) / 1000;
    const rate = secs > 0 && done > 0 ? done / secs : 0;
    return { rate: rate >= 1 || rate === 0 ? `${rate.toFixed(1)}/s` : `${(1 / rate).toFixed(1)} s each`, info: info ?? '' };
  };
  const stop = (): void => {
    multi?.stop();
    multi = undefined;
    bar = undefined;
  };
  return {
    start(total, label) {
      stop();
      started = Date.now();
      done = 0;
      multi = makeMulti();
      bar = multi.create(total, 0, { label, ...payload() });
    },
    update(value, info) {
      done = value;
      bar?.update(value, payload(info));
    },
    increment(info) {
      done += 1;
      bar?.update(done, payload(info));
    },
    note(line) {
      const text = line.endsWith('\n') ? line : line + '\n';
      if (multi) multi.log(text);
      else io.stderr(text);
    },
    stop,
  };
}
