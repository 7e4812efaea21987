// Runs the command line in a child process (argv as given), for tests of two runs at once.
import { main } from '../../src/cli/main.js';

process.exitCode = await main(process.argv);
