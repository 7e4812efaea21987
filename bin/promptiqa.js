#!/usr/bin/env node
// The command runs the compiled code; `npm ci` builds it (the `prepare` script).
import { main } from '../dist/cli/main.js';

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    console.error(`promptiqa: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
