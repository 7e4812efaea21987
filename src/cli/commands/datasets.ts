/** `promptiqa datasets`: the dataset registry. */
import { listDatasets } from '../../data/datasets.js';
import { formatTable, jsonLine } from '../io.js';
import { opt } from '../options.js';
import { examples, type Register } from '../context.js';

interface DatasetsOptions {
  json?: boolean;
}

export const register: Register = (program, { io }) => {
  program
    .command('datasets')
    .summary('list the datasets promptiqa can train and evaluate on')
    .description(
      'Lists the dataset registry: name (for --dataset), title, kind (aigc: AI-generated, synthetic or authentic distortions), ' +
        'the MOS range of the quality target and whether higher is better, the targets (for --target), the split unit of ' +
        "--split-by group, and how to obtain the data and lay out --root. 'csv' reads any label file (image,mos columns).",
    )
    .addOption(opt.json())
    .addHelpText('after', examples('promptiqa datasets', 'promptiqa datasets --json'))
    .action((o: DatasetsOptions) => {
      const all = listDatasets();
      if (o.json) {
        io.stdout(jsonLine({ datasets: all }));
        return;
      }
      io.stdout(
        formatTable(
          ['name', 'title', 'kind', 'MOS', 'better', 'targets', 'group by', 'label file'],
          all.map((d) => [
            d.name,
            d.title,
            d.kind,
            `${d.mosRange[0]}–${d.mosRange[1]}`,
            d.higherIsBetter ? 'higher' : 'lower',
            d.targets.join(', '),
            d.groupBy,
            d.labelFile,
          ]),
        ),
      );
      io.stdout('\nHow to get them (images go under --root as described):\n');
      for (const d of all) io.stdout(`  ${d.name}: ${d.howToGet}\n`);
    });
};
