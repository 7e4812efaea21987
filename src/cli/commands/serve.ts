/** `promptiqa serve`: the scoring service over HTTP (see `src/serve/server.ts`). */
import type { Provider } from '../../graph/runtime.js';
import { Option } from 'commander';
import { UsageError } from '../io.js';
import { collect, opt, parseNonNegativeInt, parsePositiveInt } from '../options.js';
import { checkMethodName } from '../lib/names.js';
import { examples, type Register } from '../context.js';

interface ServeOptions {
  method: string[];
  model?: string;
  checkpoint?: string;
  device: Provider;
  threads?: number;
  batch?: number;
  methodOptions?: Record<string, string>;
  port: number;
  host: string;
  root?: string;
  token?: string;
  cors?: string;
  maxBody: number;
  maxImages: number;
  maxQueue: number;
  maxQueueMib: number;
  timeout: number;
  batchWait: number;
  exifOrientation?: boolean;
  decodeThreads?: number;
  cache: boolean;
  allowExtraTensors?: boolean;
  quiet?: boolean;
}

const MIB = 1024 * 1024;

export const register: Register = (program, { io }) => {
  program
    .command('serve')
    .summary('score images over HTTP (POST /v1/score), batching concurrent requests')
    .description(
      'Loads the set-ups named by --method (repeatable; the first is the default, a request names another with setup) ' +
        'and answers on http://HOST:PORT: POST /v1/score takes one image as the raw body, several as multipart/form-data, or ' +
        'JSON {"files": [...], "setup": "..."} naming files under --root (a file that resolves, links followed, outside ' +
        '--root is refused with 403 and nothing is read). GET /v1/setups lists the set-ups; /healthz, /readyz, /metrics ' +
        '(Prometheus) and /openapi.json describe the service.\n\n' +
        "--model, --checkpoint and --option apply to every --method. Images of concurrent requests are scored together in the method's batches " +
        '(--batch), waiting at most --batch-wait ms for others; scores do not depend on how requests were batched.\n\n' +
        'Safety: it binds 127.0.0.1 unless --host says otherwise; any other address needs a token (--token or ' +
        'PROMPTIQA_TOKEN), which the API (/v1/...) and /metrics then ask for as Authorization: Bearer <token>. CORS ' +
        'headers are sent only for --cors ORIGIN. SIGTERM or SIGINT stops accepting, answers what is in flight and exits 0.',
    )
    // repeatable: several set-ups at once, the first the default
    .addOption(opt.method().argParser(collect).makeOptionMandatory())
    .addOption(opt.model())
    .addOption(opt.checkpoint())
    .addOption(opt.methodOption())
    .addOption(opt.device())
    .addOption(opt.threads())
    .addOption(opt.batch())
    .addOption(opt.exifOrientation())
    .addOption(opt.decodeThreads())
    .addOption(opt.noCache())
    .addOption(opt.allowExtraTensors())
    .addOption(new Option('--port <n>', 'TCP port (0: any free one, printed)').argParser(parseNonNegativeInt).default(8080))
    .addOption(new Option('--host <address>', 'address to bind; anything but loopback needs --token').default('127.0.0.1'))
    .addOption(new Option('--root <dir>', 'folder whose files JSON requests may name (and the page may open); none: no file can be named'))
    .addOption(new Option('--token <token>', 'bearer token requests must carry (at least 8 characters)').env('PROMPTIQA_TOKEN'))
    .addOption(new Option('--cors <origin>', 'send CORS headers for this origin (default: none)'))
    .addOption(new Option('--max-body <MiB>', 'largest request body or file under --root, in MiB').argParser(parsePositiveInt).default(32))
    .addOption(new Option('--max-images <n>', 'images per request at most').argParser(parsePositiveInt).default(64))
    .addOption(
      new Option('--max-queue <n>', 'images waiting per set-up at most; beyond, 503 with Retry-After')
        .argParser(parsePositiveInt)
        .default(256),
    )
    .addOption(
      new Option('--max-queue-mib <MiB>', 'bytes of images being scored at most, in MiB; beyond, 503 with Retry-After')
        .argParser(parsePositiveInt)
        .default(512),
    )
    .addOption(new Option('--timeout <s>', 'seconds a request may take; beyond, 503').argParser(parsePositiveInt).default(60))
    .addOption(
      new Option('--batch-wait <ms>', 'how long an image waits for others to fill a batch').argParser(parseNonNegativeInt).default(5),
    )
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa serve --method clip-iqa --root ./images',
        'promptiqa serve --method liqe --method clip-iqa --port 9000',
        'PROMPTIQA_TOKEN=... promptiqa serve --method clip-iqa --host 0.0.0.0',
        "curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:8080/v1/score",
        "curl -F file=@a.jpg -F file=@b.png 'http://127.0.0.1:8080/v1/score?setup=clip-iqa'",
      ),
    )
    .action(async (o: ServeOptions) => {
      const note = (s: string): void => {
        if (!o.quiet) io.stderr(s + '\n');
      };
      const { bindingProblem, createServer } = await import('../../serve/index.js');
      const token = o.token === '' ? undefined : o.token;
      const problem = bindingProblem(o.host, token);
      if (problem) throw new UsageError(problem);
      if (new Set(o.method).size !== o.method.length) throw new UsageError('a --method is named twice');
      for (const m of o.method) await checkMethodName(m, o);

      const app = await createServer({
        setups: o.method.map((method) => ({ method, model: o.model, checkpoint: o.checkpoint, methodOptions: o.methodOptions })),
        metricOptions: {
          device: o.device,
          threads: o.threads,
          batchSize: o.batch,
          allowExtraTensors: o.allowExtraTensors === true,
          applyExifOrientation: o.exifOrientation,
          ...(o.decodeThreads !== undefined ? { decodeThreads: o.decodeThreads } : {}),
          ...(o.cache ? {} : { cache: false as const }),
          onFile: (f) => note(`${f.metric}: ${f.role === 'clip' ? 'CLIP' : 'released weights'} from ${f.repo} at ${f.commit} → ${f.path}`),
        },
        root: o.root,
        token,
        cors: o.cors,
        limits: {
          maxBodyBytes: o.maxBody * MIB,
          maxImages: o.maxImages,
          maxQueue: o.maxQueue,
          maxQueueBytes: o.maxQueueMib * MIB,
          timeoutMs: o.timeout * 1000,
          batchWaitMs: o.batchWait,
        },
        onError: (err) => io.stderr(`promptiqa serve: ${err instanceof Error ? err.message : String(err)}\n`),
      });

      // SIGTERM / SIGINT: stop accepting, answer what is in flight, close the sessions, then return (exit 0)
      const stopped = new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: string): void => {
          if (stopping) return;
          stopping = true;
          note(`${signal}: closing (answering the requests in flight)`);
          void app.close().then(resolve, resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      let address: string;
      try {
        address = await app.listen({ port: o.port, host: o.host });
      } catch (err) {
        await app.close();
        throw err;
      }
      // one line, always (even with --quiet): where it answers, for people and for scripts that started it on port 0
      io.stderr(`promptiqa serve: listening on ${address} (set-ups: ${o.method.join(', ')}${token ? '; token required' : ''})\n`);
      await stopped;
      const { received, answered, abandoned } = app.promptiqa.counts();
      note(`closed: ${received} request(s) received, ${answered} answered, ${abandoned} abandoned by their client`);
    });
};
