/** `promptiqa methods`: the quality methods. */
import { formatTable, jsonLine } from '../io.js';
import { opt } from '../options.js';
import { examples, type Register } from '../context.js';

interface MethodsOptions {
  json?: boolean;
}

export const register: Register = (program, { io }) => {
  program
    .command('methods')
    .summary('list the quality methods')
    .description(
      'Lists the methods for --method: whether they train (prompts, heads) or work zero-shot, the score range and ' +
        'direction, the CLIP model they use by default, and what they compute.',
    )
    .addOption(opt.json())
    .addHelpText('after', examples('promptiqa methods', 'promptiqa methods --json'))
    .action(async (o: MethodsOptions) => {
      const { listMetrics } = await import('../../methods/index.js');
      const all = listMetrics();
      if (o.json) {
        io.stdout(jsonLine({ methods: all }));
        return;
      }
      io.stdout(
        formatTable(
          ['name', 'trains', 'range', 'better', 'default model', 'description'],
          all.map((m) => [
            m.name, m.trainable ? 'yes' : 'no (zero-shot)', `${m.scoreRange[0]}–${m.scoreRange[1]}`, m.lowerBetter ? 'lower' : 'higher',
            m.defaultModel, m.description,
          ]),
        ),
      );
    });
};
