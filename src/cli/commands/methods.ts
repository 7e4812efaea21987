/** `promptiqa methods`: the quality methods. */
import { formatTable, jsonLine } from '../io.js';
import { opt } from '../options.js';
import { examples, type Register } from '../context.js';
import { checkMethod } from '../lib/names.js';

interface MethodsOptions {
  json?: boolean;
}

export const register: Register = (program, { io }) => {
  program
    .command('methods')
    .argument('[name]', 'one method: its options (kind, default, what each takes) and presets')
    .summary("list the quality methods, or one method's options")
    .description(
      'Lists the methods for --method: whether they train (prompts, heads) or work zero-shot, the score range and ' +
        'direction, the CLIP model they use by default, and what they compute. Their options are set with ' +
        "--option key=value (train, score); the defaults follow the authors' code:\n\n" +
        "fu scores every 224 window at stride 64 from the top-left corner, as the authors' nn.Unfold: pixels past " +
        'the last window are not seen (the last 32 of a 512 side); --option windows=edge-to-edge spreads the same ' +
        "number of windows edge to edge instead. A side shorter than 224, where the authors' code fails, gets one " +
        'window padded with zeros.\n\n' +
        'tang learns 4 context tokens from "a photo of a" (the authors\' *_ctxv1 configs); --option preset=readme ' +
        "gives their README command's 16 random tokens (or set nCtx and initPhrase=, empty). It moves the warm-up + " +
        'cosine schedule once per epoch and drops the last partial batch, as Dassl does; --option lrStep=step and ' +
        '--option dropLast=false decay the rate at every step, to 0, over every batch.\n\n' +
        "Pretrained set-ups (pyiqa's released weights, listed below the methods) run with --method NAME and no " +
        '--model/--checkpoint: their files are downloaded once into the Hugging Face cache.',
    )
    .addOption(opt.json())
    .addHelpText('after', examples('promptiqa methods', 'promptiqa methods tang', 'promptiqa methods --json'))
    .action(async (name: string | undefined, o: MethodsOptions) => {
      const { listMetrics, PRETRAINED, PYIQA_WEIGHTS_REPO, describePretrained } = await import('../../methods/index.js');
      // each method with its pretrained set-ups: what `--method NAME` alone downloads and runs
      const setups = (method: string) =>
        PRETRAINED.filter((p) => p.method === method).map((p) => ({
          name: p.name,
          pyiqa: p.pyiqa,
          arch: p.arch,
          clip: p.clip ?? null,
          released: p.released ? { repo: PYIQA_WEIGHTS_REPO, file: p.released } : null,
          options: { ...p.options },
          trainedOn: p.trainedOn ?? null,
          downloads: describePretrained(p),
        }));
      const all = listMetrics().map((m) => ({ ...m, pretrained: setups(m.name) }));
      if (name !== undefined) {
        await checkMethod(name);
        const m = all.find((x) => x.name === name)!;
        if (o.json) {
          io.stdout(jsonLine(m));
          return;
        }
        io.stdout(`${m.name}: ${m.description}\n`);
        for (const p of m.pretrained) {
          io.stdout(
            `pretrained: --method ${p.name} alone runs pyiqa's ${p.pyiqa}: ${p.downloads}${p.trainedOn ? `, trained on ${p.trainedOn}` : ''}\n`,
          );
        }
        io.stdout('\noptions (--option key=value):\n');
        io.stdout(
          formatTable(
            ['option', 'default', 'takes', 'what'],
            m.options.map((x) => [x.name, JSON.stringify(x.default), x.takes, x.help]),
          ),
        );
        if (m.presets.length > 0) {
          io.stdout('\npresets (--option preset=NAME):\n');
          io.stdout(
            formatTable(
              ['preset', 'sets', 'what'],
              m.presets.map((p) => [
                p.name,
                Object.entries(p.options)
                  .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
                  .join(' '),
                p.description,
              ]),
            ),
          );
        }
        return;
      }
      if (o.json) {
        io.stdout(jsonLine({ methods: all }));
        return;
      }
      io.stdout(
        formatTable(
          ['name', 'trains', 'range', 'better', 'default model', 'pretrained', 'description'],
          all.map((m) => [
            m.name,
            m.trainable ? 'yes' : m.released ? 'no (released weights)' : 'no (zero-shot)',
            `${m.scoreRange[0]}–${m.scoreRange[1]}`,
            m.lowerBetter ? 'lower' : 'higher',
            m.defaultModel,
            m.pretrained.length === 0 ? 'no' : m.pretrained.map((p) => p.name).join(', '),
            m.description,
          ]),
        ),
      );
      const byName = new Map(all.map((m) => [m.name, m]));
      io.stdout(
        `\npretrained set-ups: --method NAME without --model/--checkpoint downloads them once (from ${PYIQA_WEIGHTS_REPO} and the CLIP's repo)\n`,
      );
      io.stdout(
        formatTable(
          ['name', 'method', 'range', 'better', 'downloads', 'trained on'],
          PRETRAINED.map((p) => {
            const m = byName.get(p.method)!;
            return [
              p.name,
              p.method,
              `${m.scoreRange[0]}–${m.scoreRange[1]}`,
              m.lowerBetter ? 'lower' : 'higher',
              describePretrained(p),
              p.trainedOn ?? '',
            ];
          }),
        ),
      );
    });
};
