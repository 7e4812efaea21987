/** `promptiqa download <repo-id>` / `--metric NAME`: fetches a CLIP model, or a pretrained metric's files, into the cache. */
import { Option } from 'commander';
import { UsageError, jsonLine, wantsProgress } from '../io.js';
import { opt } from '../options.js';
import { examples, type Register } from '../context.js';

interface DownloadOptions {
  metric?: string;
  revision?: string;
  cacheDir?: string;
  offline?: boolean;
  json?: boolean;
  quiet?: boolean;
}

export const register: Register = (program, { io }) => {
  program
    .command('download')
    .summary('download a CLIP model from the Hugging Face Hub and print its folder')
    .description(
      'Downloads the files a CLIP model needs (config.json, model.safetensors or open_clip_model.safetensors, vocab.json, ' +
        "merges.txt and the optional tokenizer/preprocessor settings; for a repo with only open_clip's files, such as " +
        'timm/resnet50_clip.openai, open_clip_model.safetensors or open_clip_pytorch_model.bin, and the weights file is printed) ' +
        "into the Hugging Face cache, the same cache Python's " +
        'huggingface_hub uses, and prints the local folder. A cut download resumes; files are checked against their ' +
        'sizes and hashes; a second call makes no request. A local folder is printed as is. ' +
        'Environment: HF_ENDPOINT (mirror), HF_HOME / HF_HUB_CACHE (cache), HF_TOKEN (gated repos), HF_HUB_OFFLINE=1.',
    )
    .argument('[repo-id]', "Hugging Face repo id 'owner/name', or a local model folder")
    .option(
      '--metric <name>',
      "a pretrained metric's files instead (its CLIP and released weights; see `promptiqa methods`), for offline use later",
    )
    .option('--revision <rev>', 'branch, tag or commit', 'main')
    .option('--cache-dir <dir>', 'cache folder (default: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)')
    .addOption(new Option('--offline', 'use only the cache, never the network (as HF_HUB_OFFLINE=1)'))
    .addOption(opt.json())
    .addOption(opt.quiet())
    .addHelpText(
      'after',
      examples(
        'promptiqa download openai/clip-vit-base-patch32',
        'promptiqa download openai/clip-vit-base-patch16 --revision main --cache-dir ./hf-cache',
        'HF_ENDPOINT=https://hf-mirror.com promptiqa download openai/clip-vit-large-patch14',
        'promptiqa download --metric liqe   # then: HF_HUB_OFFLINE=1 promptiqa score ./images --method liqe',
      ),
    )
    .action(async (repo: string | undefined, o: DownloadOptions) => {
      if ((repo === undefined) === (o.metric === undefined)) throw new UsageError('give a repo id or --metric NAME (one of them)');
      const hub = {
        cacheDir: o.cacheDir,
        ...(o.offline ? { offline: true } : {}),
        progress: wantsProgress(io, o.quiet),
      };
      if (o.metric !== undefined) {
        const { PRETRAINED, fetchPretrained, findPretrained } = await import('../../methods/pretrained.js');
        const p = findPretrained(o.metric);
        if (!p) throw new UsageError(`no pretrained metric '${o.metric}'; choose from ${PRETRAINED.map((x) => x.name).join(', ')}`);
        const files: Array<{ role: string; repo: string; commit: string; path: string }> = [];
        await fetchPretrained(p, hub, (f) => files.push({ role: f.role, repo: f.repo, commit: f.commit, path: f.path }));
        io.stdout(
          o.json ? jsonLine({ metric: p.name, files }) : files.map((f) => `${f.role}: ${f.repo} at ${f.commit} → ${f.path}\n`).join(''),
        );
        return;
      }
      const { resolveModel } = await import('../../clip/hub.js');
      const dir = await resolveModel(repo!, { ...hub, revision: o.revision });
      io.stdout(o.json ? jsonLine({ repo, revision: o.revision, path: dir }) : `${dir}\n`);
    });
};
