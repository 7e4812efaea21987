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
        '--option dropLast=false decay the rate at every step, to 0, over every batch.',
    )
    .addOption(opt.json())
    .addHelpText('after', examples('promptiqa methods', 'promptiqa methods tang', 'promptiqa methods --json'))
    .action(async (name: string | undefined, o: MethodsOptions) => {
      const { listMetrics } = await import('../../methods/index.js');
      const all = listMetrics();
      if (name !== undefined) {
        await checkMethod(name);
        const m = all.find((x) => x.name === name)!;
        if (o.json) {
          io.stdout(jsonLine(m));
          return;
        }
        io.stdout(`${m.name}: ${m.description}\n\noptions (--option key=value):\n`);
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
          ['name', 'trains', 'range', 'better', 'default model', 'description'],
          all.map((m) => [
            m.name,
            m.trainable ? 'yes' : 'no (zero-shot)',
            `${m.scoreRange[0]}–${m.scoreRange[1]}`,
            m.lowerBetter ? 'lower' : 'higher',
            m.defaultModel,
            m.description,
          ]),
        ),
      );
    });
};
