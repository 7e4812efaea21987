/** `promptiqa download <repo-id>`: fetches a CLIP model from the Hugging Face Hub into the cache. */
import { Option } from 'commander';
import { jsonLine, wantsProgress } from '../io.js';
import { opt } from '../options.js';
import { examples, type Register } from '../context.js';

interface DownloadOptions {
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
        "merges.txt and the optional tokenizer/preprocessor settings) into the Hugging Face cache, the same cache Python's " +
        'huggingface_hub uses, and prints the local folder. A cut download resumes; files are checked against their ' +
        'sizes and hashes; a second call makes no request. A local folder is printed as is. ' +
        'Environment: HF_ENDPOINT (mirror), HF_HOME / HF_HUB_CACHE (cache), HF_TOKEN (gated repos), HF_HUB_OFFLINE=1.',
    )
    .argument('<repo-id>', "Hugging Face repo id 'owner/name', or a local model folder")
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
      ),
    )
    .action(async (repo: string, o: DownloadOptions) => {
      const { resolveModel } = await import('../../clip/hub.js');
      const dir = await resolveModel(repo, {
        revision: o.revision,
        cacheDir: o.cacheDir,
        ...(o.offline ? { offline: true } : {}),
        progress: wantsProgress(io, o.quiet),
      });
      io.stdout(o.json ? jsonLine({ repo, revision: o.revision, path: dir }) : `${dir}\n`);
    });
};
