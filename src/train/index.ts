/** The training layer's public face: `train` (trainer.ts), `trainRounds` (rounds.ts) and what they take and report. */
export { train } from './trainer.js';
export { trainRounds } from './rounds.js';
export { runKeyChanges } from './state.js';
export type { TrainEvent, TrainOptions, TrainResult } from './options.js';
