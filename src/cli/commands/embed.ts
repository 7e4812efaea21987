/** `promptiqa embed`: CLIP text and image embeddings (unnormalised projections), as JSON. */
import type { Provider } from '../../graph/runtime.js';
import { Option } from 'commander';
import { UsageError, fmt, formatTable, jsonLine, wantsProgress } from '../io.js';
import { collect, opt } from '../options.js';
import { createProgress } from '../progress.js';
import { examples, type Register } from '../context.js';

interface EmbedCliOptions {
  model?: string;
  image?: string[];
  text?: string[];
  batch: number;
  device: Provider;
  threads?: number;
  json?: boolean;
  quiet?: boolean;
}

export const register: Register = (program, { io }) => {
  program
    .command('embed')
    .summary("CLIP embeddings of texts and images (the reference's encode_text / encode_image)")
    .description(
      'Prints the token ids of each --text (77 ids, zero-padded after <|endoftext|>, as clip.tokenize), the projected text ' +
        'features and the projected image features of each --image, unnormalised, in the order given. Images are decoded ' +
        '(EXIF orientation applied) and preprocessed as CLIP does: short side to the input size with bicubic resampling, ' +
        'centre crop, CLIP mean/std.',
    )
    .addOption(opt.model().makeOptionMandatory())
    .addOption(new Option('--image <file>', 'an image to embed (repeatable)').argParser(collect))
    .addOption(new Option('--text <string>', 'a text to embed (repeatable)').argParser(collect))
    .addOption(opt.batch(8))
    .addOption(opt.device())
    .addOption(opt.threads())
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        "promptiqa embed --model openai/clip-vit-base-patch32 --text 'Good photo.' --text 'Bad photo.' --image cat.jpg --json",
        "promptiqa embed --model ./models/clip-vit-b-16 --image a.png --image b.png --json | jq '.image_embeds | length'",
        '',
        'Output (--json): {"input_ids": [[49406, ...77 ids]], "text_embeds": [[...]], "image_embeds": [[...]]}',
      ),
    )
    .action(async (o: EmbedCliOptions) => {
      const images = o.image ?? [];
      const texts = o.text ?? [];
      if (images.length === 0 && texts.length === 0) throw new UsageError('give at least one --image or --text');
      const { embed } = await import('../../clip/embed.js');
      const progress = createProgress(io, o.quiet);
      if (images.length > 0) progress.start(images.length, 'embed');
      let result;
      try {
        result = await embed({
          model: o.model!,
          texts,
          images,
          batchSize: o.batch,
          runtime: { provider: o.device, threads: o.threads },
          hub: { progress: wantsProgress(io, o.quiet) },
          onImages: (done) => progress.update(done),
        });
      } finally {
        progress.stop();
      }
      if (o.json) {
        io.stdout(jsonLine(result));
        return;
      }
      const norm = (v: number[]): number => Math.hypot(...v);
      const head = (v: number[]): string =>
        v
          .slice(0, 4)
          .map((x) => fmt(x))
          .join(' ') + (v.length > 4 ? ' …' : '');
      io.stdout(
        formatTable(
          ['kind', 'input', 'dim', 'norm', 'first values'],
          [
            ...texts.map((t, i) => [
              'text',
              t,
              String(result.text_embeds[i]!.length),
              fmt(norm(result.text_embeds[i]!)),
              head(result.text_embeds[i]!),
            ]),
            ...images.map((f, i) => [
              'image',
              f,
              String(result.image_embeds[i]!.length),
              fmt(norm(result.image_embeds[i]!)),
              head(result.image_embeds[i]!),
            ]),
          ],
        ),
      );
      io.stdout('(use --json for the full vectors and the token ids)\n');
    });
};
