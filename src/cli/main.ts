/**
 * The `promptiqa` command line. `main(process.argv)` parses, runs one command and resolves to the exit
 * code: 0 on success, 1 when the command failed (one line on stderr, no stack), 2 on bad usage.
 * Commands load their heavy modules (ONNX Runtime, methods, training) only when they run, so --help is
 * instant.
 */
import { Command, CommanderError } from 'commander';
import { CliError, UsageError, errorMessage, processIo, type CliIo } from './io.js';
import { type Device, resolveDevice } from '../graph/device.js';
import { checkThreads } from '../graph/settings.js';
import { examples, type Ctx, type Register } from './context.js';
import { register as scoreCmd } from './commands/score.js';
import { register as trainCmd } from './commands/train.js';
import { register as evalCmd } from './commands/eval.js';
import { register as metricsCmd } from './commands/metrics.js';
import { register as methodsCmd } from './commands/methods.js';
import { register as datasetsCmd } from './commands/datasets.js';
import { register as downloadCmd } from './commands/download.js';
import { register as embedCmd } from './commands/embed.js';
import { register as benchCmd } from './commands/bench.js';
import { register as serveCmd } from './commands/serve.js';
import { packageVersion } from '../util/version.js';
import { namesOptions } from '../util/option-names.js';
import { flagName } from './options.js';

export type { CliIo } from './io.js';

const COMMANDS: readonly Register[] = [
  scoreCmd,
  trainCmd,
  evalCmd,
  metricsCmd,
  methodsCmd,
  datasetsCmd,
  downloadCmd,
  embedCmd,
  benchCmd,
  serveCmd,
];

/**
 * The program with every command; `io` receives all output. `onCommand` is told the command's name before its
 * options are checked further and it runs.
 */
export function buildProgram(io: CliIo, onCommand?: (name: string) => void): Command {
  const ctx: Ctx = { io };
  const program = new Command('promptiqa');
  program
    .description('Blind image quality assessment with CLIP prompt learning, on ONNX Runtime.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .helpOption('-h, --help', 'show help')
    .helpCommand('help [command]', 'show help for a command')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout(s),
      writeErr: (s) => io.stderr(s),
      outputError: (s, write) => write(`promptiqa: ${s.replace(/^error: /, '')}`),
    })
    .addHelpText(
      'after',
      examples(
        'promptiqa score ./images --method clip-iqa --model openai/clip-vit-base-patch32',
        'promptiqa train --method tang --dataset agiqa-3k --root ./AGIQA-3K --out runs/tang',
        'promptiqa eval --method tang --checkpoint runs/tang --dataset agiqa-3k --root ./AGIQA-3K --split test --out runs/tang/eval',
        'promptiqa metrics scores.csv --pred-col score --mos-col mos',
        'promptiqa bench --arch vit-b-32 --batch 8 --json',
        '',
        'Run `promptiqa <command> --help` for the options and examples of each command.',
      ),
    );
  for (const add of COMMANDS) add(program, ctx);
  // Before a command runs: --device is checked here (a provider missing here is a failure, exit 1, not bad usage),
  // auto becomes the provider it picks, said once on stderr (unless --quiet), and webgpu on a software adapter says
  // so once; --threads above the cores is warned of (refused far above, while parsing)
  program.hook('preAction', (_program, command) => {
    onCommand?.(command.name());
    const o = command.opts<{ device?: Device; quiet?: boolean; threads?: number }>();
    if (o.threads !== undefined && !o.quiet) {
      const { warning } = checkThreads(o.threads, '--threads');
      if (warning) io.stderr(`warning: ${warning}\n`);
    }
    if (o.device === undefined) return;
    const { provider, why, note } = resolveDevice(o.device);
    if (note) io.stderr(`--device ${o.device}: ${note}\n`);
    if (o.device !== 'auto') return;
    if (!o.quiet) io.stderr(`--device auto: ${provider} (${why})\n`);
    command.setOptionValue('device', provider);
  });
  for (const cmd of program.commands) {
    cmd.showHelpAfterError(`(see: promptiqa ${cmd.name()} --help)`);
    cmd.configureOutput({ outputError: (s, write) => write(`promptiqa ${cmd.name()}: ${s.replace(/^error: /, '')}`) });
    cmd.helpOption('-h, --help', 'show help');
  }
  return program;
}

let epipeHandled = false;

/** Exits quietly when the reader of stdout goes away (`promptiqa ... | head`). */
function handleEpipe(): void {
  if (epipeHandled) return;
  epipeHandled = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

/** Runs the command line on user arguments (no `node` and script path). */
export async function run(args: readonly string[], io: CliIo = processIo()): Promise<number> {
  let active = '';
  const program = buildProgram(io, (name) => {
    active = name;
  });
  try {
    await program.parseAsync([...args], { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // commander has already printed its message (or the help)
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return 0;
      return 2;
    }
    const where = active ? `promptiqa ${active}` : 'promptiqa';
    if (err instanceof UsageError) {
      io.stderr(`${where}: ${err.message}\n(see: ${where} --help)\n`);
      return 2;
    }
    // an error that names the library's options is told with the flags instead
    io.stderr(`${where}: ${(namesOptions(err) ? err.messageFor(flagName) : errorMessage(err)).trim()}\n`);
    if (io.env.PROMPTIQA_DEBUG && err instanceof Error && err.stack) io.stderr(`${err.stack}\n`);
    return err instanceof CliError ? err.exitCode : 1;
  }
}

/** The entry of `bin/promptiqa.js`: `argv` is `process.argv`; resolves to the exit code. */
export async function main(argv: readonly string[], io?: CliIo): Promise<number> {
  if (!io) handleEpipe();
  return run(argv.slice(2), io ?? processIo());
}
