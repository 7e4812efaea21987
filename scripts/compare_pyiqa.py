#!/usr/bin/env python3
"""Full-size comparison of promptiqa's pretrained metrics with pyiqa's own code.

For clip-iqa, clip-iqa+, liqe and liqe-mix it runs promptiqa (its command line, the built dist/) and pyiqa
(chaofengc/IQA-PyTorch's arch classes, unchanged) on the same images with the same seeded random weights at
full size, each set-up and engine in a fresh process, one after another, and reports:

  first score   process start -> first score known, for one image. promptiqa: the wall time of a one-image
                `promptiqa score` run (start to exit). pyiqa: start of the driver process -> its first score,
                split into load (imports + the metric created) and first image, e.g. "1.7 + 0.9 s".
                Where an engine caches text features on disk (pyiqa's LIQE: liqe_text_feat*.pt), it is
                given cold (cache cleared first) and warm (cache present); the targets compare warm figures.
                pyiqa's InferenceModel creates the metric with gradients on, so its LIQE encodes the prompts
                into an autograd graph: about 50 MB a prompt, some 25 GB for liqe-mix's 495. Where that cold
                run is killed (--rss-limit-gb), one more creates the metric under torch.no_grad() (the same
                features; a figure of its own) and writes the cache for the warm runs.
                promptiqa keeps its cache (weight-file digests, text features) in PROMPTIQA_CACHE, set to a
                folder of --work: its cold run is the first after that folder is cleared (a promptiqa whose
                `score --help` names no --no-cache has no cache: one figure).
  throughput    img/s with the load excluded, the same way for both engines: (N - 1) / (wall(N-image run)
                - wall(warm one-image run)); both runs start with the same image, so the difference is the
                time of the other N - 1 images. Wall times are the parent's, process start to exit.
  large photos  clip-iqa and clip-iqa+ only (LIQE looks at 15 windows of 224 whatever the size): the first
                image plus 4 large photos in one run, 4 / (wall(that run) - wall(warm one-image run)).
  peak RSS      ru_maxrss of each child (os.wait4): the largest over an engine's warm runs on the AGIQA
                images (one image and N), and apart from it its cold run and its run with the large photos.
  max |dscore|  and SRCC between the engines over the N images and the large photos (when both ran).

How to run (from the repository root, after `npm ci` / `npm run build`):

  /usr/bin/python3 scripts/compare_pyiqa.py --pyiqa PYIQA_DIR --clip CLIP_DIR [--work DIR] [--images 48] \\
      [--threads 2] [--setups clip-iqa,clip-iqa+,liqe,liqe-mix] [--engines promptiqa,pyiqa] [--repeat 1] \\
      [--rss-limit-gb 8] [--blas-core auto] [--json FILE]

  PYIQA_DIR  a checkout of https://github.com/chaofengc/IQA-PyTorch (the shared fixtures were made at commit
             01ae427f9afd66842031d3a7cb694dcad5b5cbb8): its pyiqa/ folder is imported from there.
  CLIP_DIR   a checkout of https://github.com/openai/CLIP (d05afc436d78f1c48dc0dbf8e5980a9d471f35f6): pyiqa
             imports it as `clip` (its tokenizer), and this script uses its model code once to write the
             TorchScript archives RN50.pt and ViT-B-32.pt.
  --shared   the shared data folder (default: PROMPTIQA_SHARED, else ../shared beside the checkout); the
             images are the first --images AGIQA-3K JPEGs of datasets/agiqa-3k/images, sorted by name.
  --work     where the weights, the fake caches, the large photos and the runs' outputs go (default: a new
             temporary folder). A folder already prepared with the same --seed is reused as it is.

Without --pyiqa (or with --engines promptiqa) only promptiqa runs and the pyiqa columns are absent; --clip is
then not needed. Python needs torch (with an optimised BLAS: Debian's python3-torch wants
libopenblas0-pthread), torchvision, PIL, numpy, regex, tqdm and requests. pyiqa's and OpenAI's code import a
few packages these metrics do not need: where one is missing, this script puts a stand-in into sys.modules
of the pyiqa driver (never into the checkouts): `ftfy` (fix_text as NFC normalisation, which leaves pyiqa's
ASCII prompts unchanged), `huggingface_hub` (hf_hub_url: pyiqa builds its download URLs with it; nothing is
downloaded), `packaging.version` (OpenAI's version check of torch). pyiqa's own package __init__ files
(`pyiqa`, `pyiqa.archs`, `pyiqa.utils`) are not run: they import every metric and its dependencies (cv2,
timm, einops, ...); the driver imports pyiqa/archs/clipiqa_arch.py and liqe_arch.py, with their own
imports, directly, and creates CLIPIQA / LIQE with the metric_opts of pyiqa's default_model_configs.py, as
pyiqa.create_metric does, in eval mode and without gradients, as its InferenceModel does.

Weights (seeded, --seed, written once into --work; every value exactly representable in fp16, so that pyiqa's
fp16 rounding of Conv/Linear/attention weights in build_model changes nothing; logit_scale is fp16(ln 100);
BatchNorm running stats near 0 / 1; conv weights He-scaled and each bottleneck's last BatchNorm at 1/4, so
that activations keep their size through the ResNet; transformers with OpenAI's initial std):
  openai/RN50.pt, openai/ViT-B-32.pt   OpenAI's TorchScript layout (torch.jit.trace_module of OpenAI's CLIP
      module: forward, encode_image, encode_text; every float tensor fp16; the int64 scalars
      input_resolution, context_length, vocab_size in the state dict), which pyiqa's clip_model.load reads
      as it reads OpenAI's files. pyiqa downloads them from OpenAI's URLs and checks the real files' sha256;
      the driver replaces pyiqa.archs.clip_model._download with a lookup of these files (nothing else of
      pyiqa is patched).
  hf-cache/   a Hugging Face hub cache (HF_HUB_CACHE) as huggingface_hub writes it (models--owner--name/
      {blobs,snapshots/<commit>,refs/main}; blobs of LFS files named by their sha256, of other files by git's
      blob sha1; snapshot entries relative symlinks) with
        timm/resnet50_clip.openai: open_clip_model.safetensors (OpenAI's state-dict names, F32 holding the
          RN50 values above; BatchNorm num_batches_tracked as I64), open_clip_config.json and timm's
          config.json (timm's image-tower model.safetensors is left out: promptiqa never reads it);
        chaofengc/IQA-PyTorch-Weights: liqe_koniq.pt and liqe_mix.pt, {'params': OrderedDict('clip_model.'
          + OpenAI name: tensor)} holding a whole ViT-B/32 CLIP each, with seeds of their own; dtypes as a
          CLIP fine-tuned with OpenAI's convert_weights leaves them (Conv/Linear/attention weights and
          biases, proj and text_projection fp16, the rest fp32).
      promptiqa runs its pretrained path on it: HF_HUB_CACHE=... HF_HUB_OFFLINE=1 promptiqa score ...
      --method liqe.
  clipiqa+/CLIP-IQA+_learned_prompts-random.pth   CLIP-IQA+'s learned prompts: a float16 [16, 512] tensor,
      torch.save'd bare. promptiqa refuses a released file whose name's hash prefix (-603f3273) its sha256
      does not start with, which random weights cannot meet, so promptiqa runs clip-iqa+ by hand:
      --method clip-iqa+ --checkpoint <this file> --model timm/resnet50_clip.openai (the same cache,
      offline), which its README gives as the same set-up. pyiqa finds it in its cache folder under the
      real name.
  torch/hub/pyiqa/   pyiqa's download folder (TORCH_HOME=<work>/torch for the driver): the LIQE files and the
      prompts under their released names (links to the files above), and pyiqa's LIQE text-feature cache.
  large/      4 large photos: AGIQA-3K images 1-4 upscaled with PIL (bicubic) to 1024x768, 1280x960,
      1536x1024 and 1200x1600, JPEG quality 90.

Fairness: both engines get --threads threads: promptiqa `--threads`; pyiqa torch.set_num_threads, one
inter-op thread, OMP/OPENBLAS/MKL_NUM_THREADS and OPENBLAS_THREAD_TIMEOUT=4 (idle OpenBLAS workers sleep at
once, as scripts/bench_torch.py does), and scripts/blas_core.py's pin_best_openblas_core() before torch is
imported (its blas_report(torch) is in the output; "unknown" where that module is absent).

Memory: every child is watched; one whose resident memory passes --rss-limit-gb (default 8) is killed and
reported as "killed at X GB" (the script goes on). Runs are ordered clip-iqa, clip-iqa+, liqe, liqe-mix.

Figures taken while other work runs on the machine are not comparable from run to run; compare ratios from
one run only.
"""

import argparse
import collections
import datetime
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib

SETUPS = ("clip-iqa", "clip-iqa+", "liqe", "liqe-mix")
ENGINES = ("promptiqa", "pyiqa")
# bump when the files written by `prepare` change, so that an older work folder is rewritten
WORK_VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

RN50_REPO = "timm/resnet50_clip.openai"
WEIGHTS_REPO = "chaofengc/IQA-PyTorch-Weights"
PROMPTS_NAME = "CLIP-IQA+_learned_prompts-random.pth"
PROMPTS_RELEASED_NAME = "CLIP-IQA+_learned_prompts-603f3273.pth"
LARGE_SIZES = ((1024, 768), (1280, 960), (1536, 1024), (1200, 1600))
# pyiqa's metric names and the released file each LIQE set-up reads
PYIQA_NAME = {"clip-iqa": "clipiqa", "clip-iqa+": "clipiqa+", "liqe": "liqe", "liqe-mix": "liqe_mix"}
LIQE_FILE = {"liqe": "liqe_koniq.pt", "liqe-mix": "liqe_mix.pt"}
# pyiqa's LIQE text-feature cache files, in its cache folder (pyiqa.utils.download_util.DEFAULT_CACHE_DIR)
PYIQA_TEXT_CACHE = {"liqe": "liqe_text_feat.pt", "liqe-mix": "liqe_text_feat_mix.pt"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ weights


def _seed_of(seed, name):
    return zlib.crc32(f"{seed}:{name}".encode())


def _randn(torch, seed, name, shape, std, mean=0.0):
    """Seeded N(mean, std) values, rounded to fp16 and held as fp32. Each tensor has its own stream."""
    g = torch.Generator().manual_seed(_seed_of(seed, name))
    return (torch.randn(shape, generator=g) * std + mean).half().float()


def _text_head(torch, sd, seed, embed, width=512, context=77):
    sd["positional_embedding"] = _randn(torch, seed, "positional_embedding", (context, width), 0.01)
    sd["text_projection"] = _randn(torch, seed, "text_projection", (width, embed), width ** -0.5)
    sd["logit_scale"] = torch.tensor(math.log(100.0)).half().float()


def _layer_norm(torch, sd, seed, p, c):
    sd[p + ".weight"] = _randn(torch, seed, p + ".weight", (c,), 0.05, 1.0)
    sd[p + ".bias"] = _randn(torch, seed, p + ".bias", (c,), 0.02)


def _block(torch, sd, seed, p, w, layers):
    """One residual attention block, OpenAI's names and initial std (proj_std for the output products)."""
    proj_std = w ** -0.5 * (2 * layers) ** -0.5
    sd[p + "attn.in_proj_weight"] = _randn(torch, seed, p + "attn.in_proj_weight", (3 * w, w), w ** -0.5)
    sd[p + "attn.in_proj_bias"] = _randn(torch, seed, p + "attn.in_proj_bias", (3 * w,), 0.02)
    sd[p + "attn.out_proj.weight"] = _randn(torch, seed, p + "attn.out_proj.weight", (w, w), proj_std)
    sd[p + "attn.out_proj.bias"] = _randn(torch, seed, p + "attn.out_proj.bias", (w,), 0.02)
    _layer_norm(torch, sd, seed, p + "ln_1", w)
    sd[p + "mlp.c_fc.weight"] = _randn(torch, seed, p + "mlp.c_fc.weight", (4 * w, w), (2 * w) ** -0.5)
    sd[p + "mlp.c_fc.bias"] = _randn(torch, seed, p + "mlp.c_fc.bias", (4 * w,), 0.02)
    sd[p + "mlp.c_proj.weight"] = _randn(torch, seed, p + "mlp.c_proj.weight", (w, 4 * w), proj_std)
    sd[p + "mlp.c_proj.bias"] = _randn(torch, seed, p + "mlp.c_proj.bias", (w,), 0.02)
    _layer_norm(torch, sd, seed, p + "ln_2", w)


def _text_tail(torch, sd, seed, width=512, layers=12, vocab=49408):
    for i in range(layers):
        _block(torch, sd, seed, f"transformer.resblocks.{i}.", width, layers)
    sd["token_embedding.weight"] = _randn(torch, seed, "token_embedding.weight", (vocab, width), 0.02)
    _layer_norm(torch, sd, seed, "ln_final", width)


def _batch_norm(torch, sd, seed, p, c, gain=1.0):
    sd[p + ".weight"] = _randn(torch, seed, p + ".weight", (c,), 0.1 * gain, gain)
    sd[p + ".bias"] = _randn(torch, seed, p + ".bias", (c,), 0.05)
    sd[p + ".running_mean"] = _randn(torch, seed, p + ".running_mean", (c,), 0.05)
    sd[p + ".running_var"] = (1 + _randn(torch, seed, p + ".running_var", (c,), 0.1).abs()).half().float()
    sd[p + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.int64)


def _conv(torch, sd, seed, name, cout, cin, k, gain=2.0):
    sd[name] = _randn(torch, seed, name, (cout, cin, k, k), math.sqrt(gain / (cin * k * k)))


# The architectures: OpenAI's RN50 and ViT-B/32 ("full"), and a tiny stand-in of each for the test of this
# script's files (test/compare-pyiqa.test.ts): same layouts, 8-wide ResNet stages, one 64-wide block per tower.
SIZES = {
    "full": {"rn": {"layers": (3, 4, 6, 3), "width": 64, "embed": 1024},
             "vit": {"width": 768, "layers": 12, "embed": 512},
             "text": {"width": 512, "layers": 12}},
    "tiny": {"rn": {"layers": (1, 1, 1, 1), "width": 8, "embed": 64},
             "vit": {"width": 64, "layers": 1, "embed": 64},
             "text": {"width": 64, "layers": 1}},
}


def rn50_state_dict(torch, seed, layers=(3, 4, 6, 3), width=64, embed=1024, resolution=224, text=None):
    """OpenAI's RN50 CLIP (ModifiedResNet + text transformer), in OpenAI's state-dict order and names."""
    text = text or SIZES["full"]["text"]
    sd = collections.OrderedDict()
    _text_head(torch, sd, seed, embed, text["width"])
    v = "visual."
    _conv(torch, sd, seed, v + "conv1.weight", width // 2, 3, 3, gain=1.0)
    _batch_norm(torch, sd, seed, v + "bn1", width // 2)
    _conv(torch, sd, seed, v + "conv2.weight", width // 2, width // 2, 3)
    _batch_norm(torch, sd, seed, v + "bn2", width // 2)
    _conv(torch, sd, seed, v + "conv3.weight", width, width // 2, 3)
    _batch_norm(torch, sd, seed, v + "bn3", width)
    inplanes = width
    for li, (blocks, planes) in enumerate(zip(layers, (width, width * 2, width * 4, width * 8))):
        stride = 1 if li == 0 else 2
        for b in range(blocks):
            p = f"{v}layer{li + 1}.{b}."
            _conv(torch, sd, seed, p + "conv1.weight", planes, inplanes, 1)
            _batch_norm(torch, sd, seed, p + "bn1", planes)
            _conv(torch, sd, seed, p + "conv2.weight", planes, planes, 3)
            _batch_norm(torch, sd, seed, p + "bn2", planes)
            _conv(torch, sd, seed, p + "conv3.weight", planes * 4, planes, 1)
            _batch_norm(torch, sd, seed, p + "bn3", planes * 4, gain=0.25)
            if b == 0 and (stride > 1 or inplanes != planes * 4):
                _conv(torch, sd, seed, p + "downsample.0.weight", planes * 4, inplanes, 1, gain=1.0)
                _batch_norm(torch, sd, seed, p + "downsample.1", planes * 4)
            inplanes = planes * 4
    c = width * 32
    a = v + "attnpool."
    sd[a + "positional_embedding"] = _randn(torch, seed, a + "positional_embedding", ((resolution // 32) ** 2 + 1, c), c ** -0.5)
    for proj, out in (("k_proj", c), ("q_proj", c), ("v_proj", c), ("c_proj", embed)):
        sd[a + proj + ".weight"] = _randn(torch, seed, a + proj + ".weight", (out, c), c ** -0.5)
        sd[a + proj + ".bias"] = _randn(torch, seed, a + proj + ".bias", (out,), 0.02)
    _text_tail(torch, sd, seed, text["width"], text["layers"])
    return sd


def vit_b32_state_dict(torch, seed, width=768, layers=12, patch=32, resolution=224, embed=512, text=None):
    """OpenAI's ViT-B/32 CLIP, in OpenAI's state-dict order and names."""
    text = text or SIZES["full"]["text"]
    sd = collections.OrderedDict()
    _text_head(torch, sd, seed, embed, text["width"])
    v = "visual."
    scale = width ** -0.5
    sd[v + "class_embedding"] = _randn(torch, seed, v + "class_embedding", (width,), scale)
    sd[v + "positional_embedding"] = _randn(torch, seed, v + "positional_embedding", ((resolution // patch) ** 2 + 1, width), scale)
    sd[v + "proj"] = _randn(torch, seed, v + "proj", (width, embed), scale)
    sd[v + "conv1.weight"] = _randn(torch, seed, v + "conv1.weight", (width, 3, patch, patch), (3 * patch * patch) ** -0.5)
    _layer_norm(torch, sd, seed, v + "ln_pre", width)
    for i in range(layers):
        _block(torch, sd, seed, f"{v}transformer.resblocks.{i}.", width, layers)
    _layer_norm(torch, sd, seed, v + "ln_post", width)
    _text_tail(torch, sd, seed, text["width"], text["layers"])
    return sd


def _converted_to_fp16(name):
    """Whether OpenAI's convert_weights makes this tensor fp16 (Conv/Linear weights and biases, attention
    in-projections, text_projection and proj)."""
    if name in ("text_projection", "visual.proj"):
        return True
    if name.endswith(("attn.in_proj_weight", "attn.in_proj_bias")):
        return True
    if re.search(r"(conv\d|downsample\.0|[kqvc]_proj|out_proj|c_fc|mlp\.c_proj)\.(weight|bias)$", name):
        return True
    return False


# ------------------------------------------------------------------------------------------------ files


def write_safetensors(path, tensors, metadata=None):
    """safetensors: u64 header length, JSON header (8-byte aligned), the tensors' bytes (little-endian)."""
    names = {"torch.float32": "F32", "torch.float16": "F16", "torch.int64": "I64"}
    header, offset, arrays = {}, 0, []
    for name, t in tensors.items():
        a = t.contiguous().numpy()
        header[name] = {"dtype": names[str(t.dtype)], "shape": list(t.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for a in arrays:
            f.write(a.tobytes())


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(name):
    return name.endswith((".safetensors", ".pt", ".pth", ".bin"))


class HubCache:
    """Writes a Hugging Face hub cache as huggingface_hub does (models--owner--name/{blobs,snapshots,refs})."""

    def __init__(self, root):
        self.root = root

    def repo_dir(self, repo):
        return os.path.join(self.root, "models--" + repo.replace("/", "--"))

    def add(self, repo, commit, name, src=None, data=None):
        """Adds a file (moved from `src`, or `data` bytes) at `commit`; returns its snapshot path."""
        d = self.repo_dir(repo)
        os.makedirs(os.path.join(d, "blobs"), exist_ok=True)
        if data is None:
            etag = file_sha256(src) if is_lfs(name) else git_blob_sha1(open(src, "rb").read())
        else:
            etag = hashlib.sha256(data).hexdigest() if is_lfs(name) else git_blob_sha1(data)
        blob = os.path.join(d, "blobs", etag)
        if data is None:
            os.replace(src, blob)
        else:
            with open(blob, "wb") as f:
                f.write(data)
        pointer = os.path.join(d, "snapshots", commit, name)
        os.makedirs(os.path.dirname(pointer), exist_ok=True)
        if os.path.lexists(pointer):
            os.remove(pointer)
        os.symlink(os.path.relpath(blob, os.path.dirname(pointer)), pointer)
        os.makedirs(os.path.join(d, "refs"), exist_ok=True)
        with open(os.path.join(d, "refs", "main"), "w") as f:
            f.write(commit)
        return pointer


def fake_commit(seed, repo):
    return hashlib.sha1(f"promptiqa-compare:{seed}:{repo}".encode()).hexdigest()


def link(target, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(os.path.relpath(target, os.path.dirname(path)), path)


def work_paths(work):
    return {
        "manifest": os.path.join(work, "manifest.json"),
        "hf": os.path.join(work, "hf-cache"),
        "openai": os.path.join(work, "openai"),
        "prompts": os.path.join(work, "clipiqa+", PROMPTS_NAME),
        "torch_home": os.path.join(work, "torch"),
        "pyiqa_cache": os.path.join(work, "torch", "hub", "pyiqa"),
        "large": os.path.join(work, "large"),
        "runs": os.path.join(work, "runs"),
    }


def agiqa_images(shared, n):
    folder = os.path.join(shared, "datasets", "agiqa-3k", "images")
    if not os.path.isdir(folder):
        raise SystemExit(f"no AGIQA-3K images at {folder}: give --shared (the shared data folder) or PROMPTIQA_SHARED")
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg")))
    if len(names) < max(n, 5):
        raise SystemExit(f"{folder} has {len(names)} JPEGs; need at least {max(n, 5)}")
    return [os.path.join(folder, f) for f in names[:n]], [os.path.join(folder, f) for f in names[1:5]]


def trace_openai_archive(torch, clip_dir, sd, path, resolution):
    """OpenAI's TorchScript layout: trace OpenAI's CLIP module built from `sd`, every float tensor fp16."""
    if clip_dir not in sys.path:
        sys.path.insert(0, clip_dir)
    install_stubs()
    from clip.model import build_model  # OpenAI's model code, from the --clip checkout

    model = build_model(collections.OrderedDict((k, v.clone()) for k, v in sd.items())).float().eval()
    # OpenAI's archives carry these as int64 scalars in the state dict (build_model deletes them on load)
    for key, value in (("input_resolution", resolution), ("context_length", 77), ("vocab_size", 49408)):
        if key in model.__dict__:
            delattr(model, key)  # a plain attribute of OpenAI's CLIP module
        model.register_buffer(key, torch.tensor(value, dtype=torch.int64))
    image = torch.zeros(1, 3, resolution, resolution)
    text = torch.zeros(2, 77, dtype=torch.int64)
    text[:, 0], text[:, 1], text[:, 2] = 49406, 320, 49407
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(
            model, {"forward": (image, text), "encode_image": (image,), "encode_text": (text,)}, check_trace=False
        )
    traced.half()
    traced.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    # it must give back the values it was made from
    got = torch.jit.load(path, map_location="cpu").state_dict()
    for k, v in sd.items():
        if not torch.equal(got[k].to(v.dtype), v):
            raise RuntimeError(f"{path}: {k} differs from the generated weights")


def prepare(args):
    """Writes the weights, the fake caches and the large photos into --work (quick when they are there)."""
    p = work_paths(args.work)
    want = {"version": WORK_VERSION, "seed": args.seed, "size": args.size}
    size = SIZES[args.size]
    manifest = {}
    if os.path.isfile(p["manifest"]):
        manifest = json.load(open(p["manifest"]))
    fresh = {k: manifest.get(k, "full" if k == "size" else None) for k in want} != want
    need_archives = args.clip is not None and not all(
        os.path.isfile(os.path.join(p["openai"], f)) for f in ("RN50.pt", "ViT-B-32.pt")
    )
    _, large_sources = agiqa_images(args.shared, 0)
    if not fresh and not need_archives and manifest.get("large_sources") == [os.path.basename(s) for s in large_sources]:
        log(f"[compare] work folder {args.work}: reused (seed {args.seed})")
        return manifest
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    if fresh:
        for k in ("hf", "openai", "prompts", "pyiqa_cache", "large"):
            path = p[k]
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        manifest = dict(want)
        log(f"[compare] writing {args.size} weights and caches into {args.work}")
        hub = HubCache(p["hf"])
        # RN50 in open_clip's files, as timm's CLIP repos carry it
        rn50 = rn50_state_dict(torch, args.seed, **size["rn"], text=size["text"])
        commit = fake_commit(args.seed, RN50_REPO)
        tmp = os.path.join(args.work, "open_clip_model.safetensors.tmp")
        write_safetensors(tmp, rn50)
        hub.add(RN50_REPO, commit, "open_clip_model.safetensors", src=tmp)
        open_clip_config = {
            "model_cfg": {
                "embed_dim": size["rn"]["embed"],
                "quick_gelu": True,
                "vision_cfg": {"image_size": 224, "layers": list(size["rn"]["layers"]), "width": size["rn"]["width"],
                               "patch_size": None},
                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": size["text"]["width"],
                             "heads": size["text"]["width"] // 64, "layers": size["text"]["layers"]},
            },
            "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
        }
        hub.add(RN50_REPO, commit, "open_clip_config.json", data=json.dumps(open_clip_config, indent=2).encode())
        timm_config = {
            "architecture": "resnet50_clip",
            "num_classes": size["rn"]["embed"],
            "pretrained_cfg": {"tag": "openai", "custom_load": False, "input_size": [3, 224, 224], "fixed_input_size": True,
                               "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "center",
                               "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                               "num_classes": size["rn"]["embed"], "pool_size": None, "first_conv": "stem.conv1", "classifier": "head"},
        }
        hub.add(RN50_REPO, commit, "config.json", data=json.dumps(timm_config, indent=2).encode())
        manifest["rn50_commit"] = commit

        # pyiqa's released LIQE files: the whole CLIP under clip_model., mixed dtypes, a seed each
        commit = fake_commit(args.seed, WEIGHTS_REPO)
        for i, name in enumerate(("liqe_koniq.pt", "liqe_mix.pt")):
            sd = vit_b32_state_dict(torch, args.seed * 1000 + 11 + i, **size["vit"], text=size["text"])
            params = collections.OrderedDict(
                ("clip_model." + k, v.half() if _converted_to_fp16(k) else v.clone()) for k, v in sd.items()
            )
            tmp = os.path.join(args.work, name + ".tmp")
            torch.save({"params": params}, tmp)
            path = hub.add(WEIGHTS_REPO, commit, name, src=tmp)
            link(path, os.path.join(p["pyiqa_cache"], name))
            del sd, params
        manifest["weights_commit"] = commit

        # CLIP-IQA+'s learned prompts: [16, 512] fp16, torch.save'd bare
        g = torch.Generator().manual_seed(_seed_of(args.seed, "clipiqa+ ctx"))
        ctx = (torch.randn(16, size["text"]["width"], generator=g) * 0.02).half()
        os.makedirs(os.path.dirname(p["prompts"]), exist_ok=True)
        torch.save(ctx, p["prompts"])
        # pyiqa names its download after the URL's last part, which hf_hub_url quotes ('+' -> %2B)
        for name in (PROMPTS_RELEASED_NAME, PROMPTS_RELEASED_NAME.replace("+", "%2B")):
            link(p["prompts"], os.path.join(p["pyiqa_cache"], name))
        del rn50

    if args.clip is not None and (fresh or need_archives):
        os.makedirs(p["openai"], exist_ok=True)
        trace_openai_archive(torch, args.clip, rn50_state_dict(torch, args.seed, **size["rn"], text=size["text"]),
                             os.path.join(p["openai"], "RN50.pt"), 224)
        # the base CLIP pyiqa's LIQE loads before its checkpoint (which replaces every weight): a seed of its own
        trace_openai_archive(torch, args.clip, vit_b32_state_dict(torch, args.seed * 1000 + 10, **size["vit"], text=size["text"]),
                             os.path.join(p["openai"], "ViT-B-32.pt"), 224)

    from PIL import Image

    os.makedirs(p["large"], exist_ok=True)
    large = []
    for src, (w, h) in zip(large_sources, LARGE_SIZES):
        out = os.path.join(p["large"], f"large_{w}x{h}_{os.path.splitext(os.path.basename(src))[0]}.jpg")
        with Image.open(src) as im:
            im.convert("RGB").resize((w, h), Image.BICUBIC).save(out, quality=90)
        large.append(os.path.basename(out))
    manifest["large"] = large
    manifest["large_sources"] = [os.path.basename(s) for s in large_sources]
    manifest["torch"] = torch.__version__
    with open(p["manifest"] + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2)
    os.replace(p["manifest"] + ".tmp", p["manifest"])
    log(f"[compare] work folder {args.work}: written in {time.time() - t0:.1f} s (seed {args.seed})")
    return manifest


# ------------------------------------------------------------------------------------------------ pyiqa driver


def install_stubs():
    """Stand-ins for packages pyiqa's and OpenAI's code import but these metrics do not use (only where the
    real package is missing)."""
    import importlib.util
    import types
    import unicodedata
    import urllib.parse

    def missing(name):
        try:
            return importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            return True

    if missing("ftfy"):
        m = types.ModuleType("ftfy")
        m.fix_text = lambda s: unicodedata.normalize("NFC", s)
        sys.modules["ftfy"] = m
    if missing("huggingface_hub"):
        m = types.ModuleType("huggingface_hub")
        m.hf_hub_url = lambda repo_id, filename, **_: (  # as huggingface_hub's: the file name URL-quoted
            f"https://huggingface.co/{repo_id}/resolve/main/{urllib.parse.quote(filename)}")
        sys.modules["huggingface_hub"] = m
    if missing("packaging"):
        pkg = types.ModuleType("packaging")
        ver = types.ModuleType("packaging.version")
        ver.parse = lambda v: tuple(int(x) for x in re.findall(r"\d+", str(v))[:3])
        pkg.version = ver
        sys.modules["packaging"] = pkg
        sys.modules["packaging.version"] = ver


def driver(args):
    """Runs one pyiqa metric on the images, in this process; writes timestamps and scores to --out."""
    t_start = time.time()
    os.environ["TORCH_HOME"] = work_paths(args.work)["torch_home"]
    try:
        import blas_core  # scripts/blas_core.py, beside this script
    except ImportError:
        blas_core = None
    if blas_core is not None:
        blas_core.set_threads(args.threads)
        blas_core.pin_best_openblas_core()  # may re-exec this interpreter with OPENBLAS_CORETYPE set
    else:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(args.threads)
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
    import types

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    sys.path.insert(0, args.clip)
    sys.path.insert(0, args.pyiqa)
    install_stubs()
    # pyiqa's package __init__ files import every metric; make the packages without running them
    for name, sub in (("pyiqa", ""), ("pyiqa.archs", "archs"), ("pyiqa.utils", "utils")):
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(args.pyiqa, "pyiqa", sub)]
        sys.modules[name] = m
    import pyiqa.archs.clip_model as clip_model
    import pyiqa.utils.download_util as download_util

    openai_dir = work_paths(args.work)["openai"]
    archives = {"RN50.pt": os.path.join(openai_dir, "RN50.pt"), "ViT-B-32.pt": os.path.join(openai_dir, "ViT-B-32.pt")}

    def _download(url, root):  # OpenAI's URL -> this work folder's archive (pyiqa checks the real file's sha256)
        return archives[os.path.basename(url)]

    def _no_download(url, *a, **k):
        raise RuntimeError(f"pyiqa tried to download {url}: the work folder lacks it")

    clip_model._download = _download
    download_util.download_url_to_file = _no_download
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    opts = dict(DEFAULT_CONFIGS[PYIQA_NAME[args.setup]]["metric_opts"])
    kind = opts.pop("type")
    if kind == "CLIPIQA":
        from pyiqa.archs.clipiqa_arch import CLIPIQA as Arch
    else:
        from pyiqa.archs.liqe_arch import LIQE as Arch
    from PIL import Image
    import torchvision.transforms.functional as TF

    t_imported = time.time()
    with torch.set_grad_enabled(not args.create_under_no_grad):
        net = Arch(**opts).eval()
    t_created = time.time()
    scores, stamps = {}, []
    with torch.no_grad():
        for path in args.images:
            try:
                # pyiqa's imread2tensor(path, rgb=True): PIL, RGB, [0, 1] at full resolution
                x = TF.to_tensor(Image.open(path).convert("RGB")).unsqueeze(0)
                scores[path] = float(net(x).reshape(-1)[0])
            except Exception as e:  # pyiqa raises for an image it refuses (LIQE: a side under 224)
                scores[path] = {"error": f"{type(e).__name__}: {e}"}
            stamps.append(time.time())
    report = blas_core.blas_report(torch) if blas_core is not None else {"blas_core": "unknown"}
    out = {
        "t_start": t_start, "t_imported": t_imported, "t_created": t_created, "stamps": stamps, "scores": scores,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "blas": report,
        "opts": {"type": kind, **opts},
    }
    with open(args.out + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(args.out + ".tmp", args.out)


# ------------------------------------------------------------------------------------------------ runs


def _tree(pid):
    """pid and its descendants (through /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _rss(pid):
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def run_child(cmd, env, log_path, rss_limit, timeout):
    """Runs cmd; returns wall time (start to exit), exit code, peak RSS (ru_maxrss) and whether it was killed
    for memory (at what resident size) or time."""
    with open(log_path, "wb") as log_file:
        t_spawn = time.time()
        p0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO,
                                start_new_session=True)
    done = {}

    def wait():
        _, status, usage = os.wait4(proc.pid, 0)
        done.update(end=time.perf_counter(), status=status, usage=usage)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    killed_rss, timed_out, seen = None, False, 0
    while waiter.is_alive():
        rss = _rss(proc.pid)
        seen = max(seen, rss)
        if rss_limit and rss > rss_limit and killed_rss is None:
            killed_rss = rss
            os.killpg(proc.pid, signal.SIGKILL)
        if time.perf_counter() - p0 > timeout and not timed_out:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
        waiter.join(0.05)
    proc.returncode = os.waitstatus_to_exitcode(done["status"])  # reaped by wait4 above
    return {
        "t_spawn": t_spawn,
        "wall_s": done["end"] - p0,
        "rc": proc.returncode,
        "maxrss": max(done["usage"].ru_maxrss * 1024, seen),
        "killed_rss": killed_rss,
        "timed_out": timed_out,
        "log": log_path,
    }


def promptiqa_help():
    try:
        return subprocess.run(["node", os.path.join(REPO, "bin", "promptiqa.js"), "score", "--help"],
                              capture_output=True, text=True, cwd=REPO, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


# promptiqa's cache (digests of weight files, text features of fixed prompts): PROMPTIQA_CACHE names its folder,
# here one in the work folder. A promptiqa whose `score --help` names --no-cache has it: its cold run is the
# first run after that folder is cleared (which writes it again, as pyiqa's cold LIQE run writes its own), its
# warm runs find it. Should the cache move, change these two functions.
def promptiqa_cache_dir(work):
    return os.path.join(work, "promptiqa-cache")


def promptiqa_env(work):
    env = dict(os.environ)
    for k in ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME"):
        env.pop(k, None)
    env["HF_HUB_CACHE"] = work_paths(work)["hf"]
    env["HF_HUB_OFFLINE"] = "1"
    env["PROMPTIQA_CACHE"] = promptiqa_cache_dir(work)
    return env


def clear_promptiqa_cache(work):
    if os.path.isdir(promptiqa_cache_dir(work)):
        shutil.rmtree(promptiqa_cache_dir(work))


def promptiqa_cmd(setup, files, out, threads, work):
    cmd = ["node", os.path.join(REPO, "bin", "promptiqa.js"), "score", *files, "--method", setup]
    if setup == "clip-iqa+":
        # by hand: promptiqa refuses random prompts under the released name (its sha256 prefix); same set-up
        cmd += ["--checkpoint", work_paths(work)["prompts"], "--model", RN50_REPO]
    return cmd + ["--format", "jsonl", "--output", out, "--threads", str(threads), "--quiet"]


def read_jsonl(path):
    scores = {}
    if os.path.isfile(path):
        for line in open(path):
            line = line.strip()
            if line:
                r = json.loads(line)
                if "file" not in r:
                    continue  # the first line says what made the scores
                scores[os.path.realpath(r["file"])] = r["score"] if "score" in r else {"error": r.get("error")}
    return scores


class Runner:
    def __init__(self, args):
        self.args = args
        self.paths = work_paths(args.work)
        os.makedirs(self.paths["runs"], exist_ok=True)
        self.rss_limit = int(args.rss_limit_gb * 1e9) if args.rss_limit_gb > 0 else 0

    def run(self, engine, setup, label, files, cold=False, no_grad_create=False):
        """One process of `engine` scoring `files`; returns the run's figures and scores."""
        base = os.path.join(self.paths["runs"], f"{setup}.{engine}.{label}")
        out = base + (".jsonl" if engine == "promptiqa" else ".json")
        if os.path.exists(out):
            os.remove(out)
        if engine == "promptiqa":
            cmd = promptiqa_cmd(setup, files, out, self.args.threads, self.args.work)
            if cold:
                clear_promptiqa_cache(self.args.work)
            r = run_child(cmd, promptiqa_env(self.args.work), base + ".log", self.rss_limit, self.args.timeout)
            r["scores"] = read_jsonl(out)
        else:
            if cold and setup in PYIQA_TEXT_CACHE:
                path = os.path.join(self.paths["pyiqa_cache"], PYIQA_TEXT_CACHE[setup])
                if os.path.exists(path):
                    os.remove(path)
            cmd = [sys.executable, os.path.abspath(__file__), "pyiqa-driver", "--pyiqa", self.args.pyiqa, "--clip",
                   self.args.clip, "--work", self.args.work, "--setup", setup, "--threads", str(self.args.threads),
                   "--out", out, "--blas-core", self.args.blas_core,
                   *(["--create-under-no-grad"] if no_grad_create else []), *files]
            env = dict(os.environ)
            r = run_child(cmd, env, base + ".log", self.rss_limit, self.args.timeout)
            r["scores"] = {}
            if os.path.isfile(out):
                d = json.load(open(out))
                r["scores"] = {os.path.realpath(k): v for k, v in d.pop("scores").items()}
                r["driver"] = d
                stamps = d["stamps"]
                if stamps:
                    r["load_s"] = d["t_created"] - r["t_spawn"]
                    r["first_image_s"] = stamps[0] - d["t_created"]
                    r["first_score_s"] = stamps[0] - r["t_spawn"]
        ok = r["rc"] == 0 and len([s for s in r["scores"].values() if isinstance(s, float)]) == len(files)
        r["ok"] = ok
        if r["killed_rss"]:
            r["failure"] = f"killed at {r['killed_rss'] / 1e9:.1f} GB"
        elif r["timed_out"]:
            r["failure"] = f"killed after {self.args.timeout} s"
        elif not ok:
            tail = open(base + ".log", errors="replace").read().strip().splitlines()[-3:]
            r["failure"] = f"exit {r['rc']}: " + " | ".join(tail)
        if engine == "promptiqa" and "first_score_s" not in r and ok:
            r["first_score_s"] = r["wall_s"]  # start to exit of a one-image run
        log(f"[compare] {setup:9} {engine:9} {label:12} {len(files):3} img  {r['wall_s']:7.2f} s  "
            f"peak {r['maxrss'] / 1e9:5.2f} GB" + (f"  FAILED: {r['failure']}" if not ok else ""))
        return r


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def ranks(xs):
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    r = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def srcc(a, b):
    if len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else None


def measure(runner, engine, setup, images, large, repeat, cached):
    """The runs of one engine on one set-up: cold and warm one-image runs, the N-image run, the large photos."""
    first = images[:1]
    runs = collections.defaultdict(list)

    def go(label, files, **kw):
        r = runner.run(engine, setup, label, files, **kw)
        runs[label].append(r)
        return r["ok"]

    for _ in range(repeat):
        if cached:
            cold_ok = go("cold1", first, cold=True)
            if engine == "pyiqa" and not cold_ok:
                # pyiqa's LIQE encodes its prompts while gradients are on (InferenceModel builds the metric
                # outside torch.no_grad()): for liqe-mix's 495 prompts that graph takes ~50 MB a prompt. The
                # same features, made under no_grad, write its cache for the warm runs (and are a figure too).
                if not go("cold1_nograd", first, cold=True, no_grad_create=True):
                    break
            elif not cold_ok:
                break
        if not go("warm1", first):
            break
        if not go("n", images):
            break
        if large and not go("large", first + large):
            break
    return runs


def summarise(engine, setup, runs, n_images, n_large):
    s = {"engine": engine, "setup": setup}
    ok = {k: [r for r in rs if r["ok"]] for k, rs in runs.items()}
    failed = {k: next((r["failure"] for r in rs if not r["ok"]), None) for k, rs in runs.items()}
    # a failure that leaves figures out (a failed cold run of pyiqa is reported with the cold figure)
    s["failure"] = next((failed[k] for k in ("warm1", "n", "large", "cold1_nograd") if failed.get(k)), None)
    if engine == "promptiqa" and failed.get("cold1"):
        s["failure"] = failed["cold1"]
    s["cold_failure"] = failed.get("cold1")
    s["text_cache"] = "cold1" in runs  # whether the engine caches this set-up's text features on disk

    def peak(labels):
        xs = [r["maxrss"] for k in labels for r in runs.get(k, [])]
        return max(xs) / 1e9 if xs else None

    s["peak_rss_gb"] = peak(("warm1", "n"))  # the steady state: the text cache present where there is one
    s["peak_rss_cold_gb"] = peak(("cold1",))
    s["peak_rss_cold_nograd_gb"] = peak(("cold1_nograd",))
    s["peak_rss_large_gb"] = peak(("large",))
    s["peak_rss_all_gb"] = peak(tuple(runs))
    warm = median(r["wall_s"] for r in ok.get("warm1", []))
    s["first_score_warm_s"] = median(r.get("first_score_s") for r in ok.get("warm1", []))
    s["first_score_cold_s"] = median(r.get("first_score_s") for r in ok.get("cold1", []))
    s["first_score_cold_nograd_s"] = median(r.get("first_score_s") for r in ok.get("cold1_nograd", []))
    if engine == "pyiqa":
        for key in ("load_s", "first_image_s"):
            for label in ("warm1", "cold1", "cold1_nograd"):
                s[f"{key}_{label[:-1] if label.endswith('1') else label.replace('1', '')}"] = median(
                    r.get(key) for r in ok.get(label, []))
    n_wall = median(r["wall_s"] for r in ok.get("n", []))
    if warm is not None and n_wall is not None and n_images > 1 and n_wall > warm:
        s["throughput_img_s"] = (n_images - 1) / (n_wall - warm)
    l_wall = median(r["wall_s"] for r in ok.get("large", []))
    if warm is not None and l_wall is not None and l_wall > warm:
        s["large_img_s"] = n_large / (l_wall - warm)
    s["wall_s"] = {k: [r["wall_s"] for r in rs] for k, rs in runs.items()}
    if engine == "pyiqa":
        d = next((r.get("driver") for k in ("n", "warm1", "cold1", "cold1_nograd") for r in ok.get(k, [])
                  if r.get("driver")), None)
        dn = next((r.get("driver") for r in ok.get("n", []) if r.get("driver")), None)
        if dn and len(dn["stamps"]) > 1:  # the driver's own clock, for reference: images 2..N
            s["throughput_driver_img_s"] = (len(dn["stamps"]) - 1) / (dn["stamps"][-1] - dn["stamps"][0])
        if d:
            s["blas"] = d["blas"]
            s["torch"] = d["torch"]
            s["pyiqa_opts"] = d["opts"]
    scores = {}
    for label in ("n", "large"):
        for r in ok.get(label, [])[:1]:
            scores.update(r["scores"])
    s["scores"] = scores
    return s


def compare_scores(a, b):
    common = sorted(k for k in a if k in b and isinstance(a[k], float) and isinstance(b[k], float))
    if not common:
        return None
    x, y = [a[k] for k in common], [b[k] for k in common]
    return {"n": len(common), "max_abs_diff": max(abs(p - q) for p, q in zip(x, y)), "srcc": srcc(x, y)}


# ------------------------------------------------------------------------------------------------ report


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    try:
        c = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True).stdout.strip()
        return c + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def fmt_s(x):
    return "—" if x is None else f"{x:.2f} s"


def fmt_gb(x):
    return "—" if x is None else f"{x:.2f} GB"


def fmt_r(x):
    return "—" if x is None else f"{x:.2f}"


def table(results, setups, engines, n_images):
    rows = []
    head = ["set-up", "engine", "first score, cold", "first score, warm", "pyiqa: load + first image (warm)",
            f"img/s ({n_images} images)", "img/s (4 large)", "peak RSS", "peak RSS, cold", "peak RSS, large"]
    split_column = "pyiqa" in engines
    for setup in setups:
        r = results.get(setup, {})
        large = setup in ("clip-iqa", "clip-iqa+")
        for engine in engines:
            s = r.get(engine)
            if s is None:
                continue
            cold = "—" if s.get("text_cache") else "no text cache"
            if s.get("cold_failure"):
                cold = s["cold_failure"]
            elif s.get("first_score_cold_s") is not None:
                cold = fmt_s(s["first_score_cold_s"])
            if s.get("first_score_cold_nograd_s") is not None:
                cold += f"; {fmt_s(s['first_score_cold_nograd_s'])} created under no_grad"
            split = "—"
            if engine == "pyiqa" and s.get("load_s_warm") is not None:
                split = f"{s['load_s_warm']:.2f} + {s['first_image_s_warm']:.2f} s"
            warm = fmt_s(s.get("first_score_warm_s"))
            if s.get("failure") and s.get("first_score_warm_s") is None:
                warm = s["failure"]
            rows.append([setup, engine, cold, warm, split, fmt_r(s.get("throughput_img_s")),
                         fmt_r(s.get("large_img_s")) if large else "n/a", fmt_gb(s.get("peak_rss_gb")),
                         fmt_gb(s.get("peak_rss_cold_gb")), fmt_gb(s.get("peak_rss_large_gb")) if large else "n/a"])
        c = r.get("ratios")
        if c:
            rows.append([setup, "promptiqa vs pyiqa", "", c["first_score"], "", c["throughput"], c["large"],
                         c["peak_rss"], "", c["peak_rss_large"]])
    if not split_column:  # without pyiqa, no column of its own
        head, rows = head[:4] + head[5:], [row[:4] + row[5:] for row in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    return "\n".join(out)


def ratio(a, b, invert=False):
    if a is None or b is None or a == 0 or b == 0:
        return "—"
    return f"{(b / a if invert else a / b):.2f}×"


def common_options(ap):
    ap.add_argument("--work", help="work folder (default: a new temporary folder); reused when prepared with the same seed")
    ap.add_argument("--shared", help="shared data folder (default: PROMPTIQA_SHARED, else ../shared beside the checkout)")
    ap.add_argument("--clip", help="a checkout of openai/CLIP (needed with --pyiqa)")
    ap.add_argument("--images", type=int, default=48, help="AGIQA-3K images (the first N by name; default 48)")
    ap.add_argument("--threads", type=int, default=2, help="threads for each engine (default 2)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    ap.add_argument("--size", default="full", choices=tuple(SIZES), help=argparse.SUPPRESS)  # tiny: for the test


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pyiqa-driver"]:  # internal: one pyiqa metric in this process
        d = argparse.ArgumentParser(prog="compare_pyiqa.py pyiqa-driver")
        d.add_argument("--pyiqa", required=True)
        d.add_argument("--clip", required=True)
        d.add_argument("--work", required=True)
        d.add_argument("--setup", required=True, choices=SETUPS)
        d.add_argument("--threads", type=int, required=True)
        d.add_argument("--out", required=True)
        d.add_argument("--blas-core", default="auto", help="read by blas_core.pin_best_openblas_core")
        d.add_argument("--create-under-no-grad", action="store_true",
                       help="create the metric under torch.no_grad() (pyiqa's InferenceModel does not)")
        d.add_argument("images", nargs="+")
        return driver(d.parse_args(argv[1:]))
    if argv[:1] == ["prepare"]:  # internal: write the work folder, in a process of its own
        d = argparse.ArgumentParser(prog="compare_pyiqa.py prepare")
        common_options(d)
        args = d.parse_args(argv[1:])
        if args.work is None or args.shared is None:
            d.error("prepare needs --work and --shared")
        args.work, args.shared = os.path.abspath(args.work), os.path.abspath(args.shared)
        args.clip = os.path.abspath(args.clip) if args.clip else None
        os.makedirs(args.work, exist_ok=True)
        prepare(args)
        return 0

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pyiqa", help="a checkout of chaofengc/IQA-PyTorch (without it, only promptiqa runs)")
    common_options(ap)
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated subset of {','.join(SETUPS)}")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of promptiqa,pyiqa")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each kind; figures are medians (default 1)")
    ap.add_argument("--rss-limit-gb", type=float, default=8.0,
                    help="kill a child whose resident memory passes this (default 8; 0: no limit)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a child is killed (default 1800)")
    ap.add_argument("--blas-core", default="auto", metavar="auto|keep|CORE",
                    help="pyiqa's OpenBLAS kernel, passed to scripts/blas_core.py (default auto: the best this CPU "
                         "supports where OpenBLAS's own choice falls short)")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--prepare-only", action="store_true", help="write the work folder, run nothing")
    args = ap.parse_args(argv)

    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    bad = [s for s in setups if s not in SETUPS] + [e for e in engines if e not in ENGINES]
    if bad or not setups or not engines:
        ap.error(f"unknown set-up or engine: {bad or 'none given'}")
    setups = [s for s in SETUPS if s in setups]  # liqe-mix last: it is the one that may exhaust memory
    engines = [e for e in ENGINES if e in engines]
    if args.images < 2 or args.threads < 1 or args.repeat < 1:
        ap.error("--images must be >= 2, --threads and --repeat >= 1")
    if "pyiqa" in engines and args.pyiqa is None:
        engines.remove("pyiqa")
        log("[compare] no --pyiqa: only promptiqa runs")
        if not engines:
            ap.error("--engines pyiqa needs --pyiqa")
    if "pyiqa" in engines:
        if args.clip is None:
            ap.error("--pyiqa needs --clip (a checkout of openai/CLIP: pyiqa imports it as `clip`)")
        for path, what in ((os.path.join(args.pyiqa, "pyiqa", "archs", "liqe_arch.py"), "--pyiqa"),
                           (os.path.join(args.clip, "clip", "model.py"), "--clip")):
            if not os.path.isfile(path):
                ap.error(f"{what}: no {path}")
        args.pyiqa = os.path.abspath(args.pyiqa)
    if args.clip is not None:
        args.clip = os.path.abspath(args.clip)
    if "promptiqa" in engines and not os.path.isfile(os.path.join(REPO, "dist", "cli", "main.js")):
        ap.error("promptiqa is not built (no dist/cli/main.js): run `npm run build` first")
    args.shared = os.path.abspath(args.shared or os.environ.get("PROMPTIQA_SHARED") or os.path.join(REPO, "..", "shared"))
    args.work = os.path.abspath(args.work or tempfile.mkdtemp(prefix="promptiqa-compare-"))
    os.makedirs(args.work, exist_ok=True)
    images, _ = agiqa_images(args.shared, args.images)

    # weights and caches, in a child process so that this one stays small and holds no torch threads
    cmd = [sys.executable, os.path.abspath(__file__), "prepare", "--work", args.work, "--shared", args.shared,
           "--seed", str(args.seed), "--threads", str(args.threads), "--images", str(args.images), "--size", args.size]
    if args.clip and "pyiqa" in engines:
        cmd += ["--clip", args.clip]
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise SystemExit(f"preparing {args.work} failed (exit {rc})")
    if args.prepare_only:
        print(args.work)
        return 0
    manifest = json.load(open(work_paths(args.work)["manifest"]))
    large = [os.path.join(work_paths(args.work)["large"], f) for f in manifest["large"]]

    args.promptiqa_help = promptiqa_help() if "promptiqa" in engines else ""
    promptiqa_cached = "--no-cache" in args.promptiqa_help
    runner = Runner(args)
    results = {}
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    commit = git_commit()  # before the runs: the checkout they ran
    log(f"[compare] {len(setups)} set-up(s) × {len(engines)} engine(s), {len(images)} images, {args.threads} threads; "
        f"outputs and logs in {runner.paths['runs']}")
    for setup in setups:
        results[setup] = {}
        for engine in engines:
            cached = promptiqa_cached if engine == "promptiqa" else setup in PYIQA_TEXT_CACHE
            runs = measure(runner, engine, setup, images, large if setup in ("clip-iqa", "clip-iqa+") else [],
                           args.repeat, cached)
            results[setup][engine] = summarise(engine, setup, runs, len(images), len(large))
            results[setup][engine]["runs"] = {k: [{x: y for x, y in r.items() if x not in ("scores", "driver")}
                                                  for r in rs] for k, rs in runs.items()}
        a, b = results[setup].get("promptiqa"), results[setup].get("pyiqa")
        if a and b:
            results[setup]["agreement"] = compare_scores(a["scores"], b["scores"])
            # the first-score target compares warm figures: liqe-mix once its text cache exists, as pyiqa's
            results[setup]["ratios"] = {
                "first_score": ratio(a.get("first_score_warm_s"), b.get("first_score_warm_s"), invert=True),
                "throughput": ratio(a.get("throughput_img_s"), b.get("throughput_img_s")),
                "large": ratio(a.get("large_img_s"), b.get("large_img_s")) if setup in ("clip-iqa", "clip-iqa+") else "n/a",
                "peak_rss": ratio(a.get("peak_rss_gb"), b.get("peak_rss_gb")),
                "peak_rss_large": ratio(a.get("peak_rss_large_gb"), b.get("peak_rss_large_gb"))
                if setup in ("clip-iqa", "clip-iqa+") else "n/a",
            }

    py = next((results[s]["pyiqa"] for s in setups if results[s].get("pyiqa", {}).get("blas")), None)
    header = {
        "started": started,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "images": len(images),
        "large": [os.path.basename(p) for p in large],
        "torch": (py or {}).get("torch", manifest.get("torch")),
        "blas": (py or {}).get("blas", {"blas_core": "unknown"}) if "pyiqa" in engines else None,
        "promptiqa_commit": commit,
        "node": subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip(),
        "seed": args.seed,
        "work": args.work,
        "promptiqa_text_cache": promptiqa_cached,
        "clip_iqa_plus_by_hand": "promptiqa runs clip-iqa+ as --method clip-iqa+ --checkpoint "
                                 f"{PROMPTS_NAME} --model {RN50_REPO} (random prompts cannot carry the released name's "
                                 "sha256 prefix); the README gives that as the same set-up",
    }
    print(f"promptiqa {header['promptiqa_commit']} (node {header['node']}) against pyiqa's code"
          if "pyiqa" in engines else f"promptiqa {header['promptiqa_commit']} (node {header['node']})")
    print(f"CPU: {header['cpu']} ({header['cores']} cores), {args.threads} threads each; torch {header['torch']}")
    if header["blas"] is not None:
        print("BLAS: " + ", ".join(f"{k} {v}" for k, v in header["blas"].items()))
    print(f"{len(images)} AGIQA-3K images + 4 large photos ({', '.join(f'{w}x{h}' for w, h in LARGE_SIZES)}); seed {args.seed}")
    print(f"note: {header['clip_iqa_plus_by_hand']}")
    if not promptiqa_cached and "promptiqa" in engines:
        print("note: promptiqa has no text-feature cache option (score --help names no --no-cache): one first-score figure")
    print()
    print(table(results, setups, engines, len(images)))
    print()
    for setup in setups:
        ag = results[setup].get("agreement")
        if ag:
            print(f"{setup}: max |Δscore| {ag['max_abs_diff']:.2g} over {ag['n']} images, SRCC "
                  f"{'—' if ag['srcc'] is None else format(ag['srcc'], '.6f')}")
    print("First score: promptiqa, start to exit of a one-image run; pyiqa, start to its first score. Cold: the "
          "engine's text-feature cache cleared first (pyiqa's LIQE creates its metric with gradients on, as its "
          "InferenceModel does; where that run is killed, the figure beside it creates the metric under "
          "torch.no_grad(), which writes the same cache); warm: the cache present. Throughput: (N-1) / "
          "(wall(N images) - wall(warm one-image run)), both engines. Peak RSS: the warm runs (one image and N). "
          "Ratios: pyiqa's time / promptiqa's; promptiqa's img/s / pyiqa's; promptiqa's RSS / pyiqa's.")
    targets = []
    for setup in setups:
        a, b = results[setup].get("promptiqa"), results[setup].get("pyiqa")
        if not a:
            continue
        if setup == "liqe-mix":
            targets.append((f"{setup}: scores with peak RSS ≤ 2.5 GB (every run, cold included)",
                            not a.get("failure") and a["peak_rss_all_gb"] is not None and a["peak_rss_all_gb"] <= 2.5))
        if b:
            fa, fb = a.get("first_score_warm_s"), b.get("first_score_warm_s")
            targets.append((f"{setup}: first score no later than pyiqa's", fa is not None and fb is not None and fa <= fb))
            ta, tb = a.get("throughput_img_s"), b.get("throughput_img_s")
            targets.append((f"{setup}: throughput ≥ 3× pyiqa", ta is not None and tb is not None and ta >= 3 * tb))
            if setup in ("clip-iqa", "clip-iqa+"):
                la, lb = a.get("large_img_s"), b.get("large_img_s")
                targets.append((f"{setup}: large photos ≥ 3× pyiqa", la is not None and lb is not None and la >= 3 * lb))
            targets.append((f"{setup}: peak RSS no higher than pyiqa's (warm runs)",
                            not a.get("failure") and not b.get("failure") and a["peak_rss_gb"] is not None
                            and b["peak_rss_gb"] is not None and a["peak_rss_gb"] <= b["peak_rss_gb"]))
            if b and a.get("peak_rss_large_gb") is not None and b.get("peak_rss_large_gb") is not None:
                targets.append((f"{setup}: peak RSS on the large photos no higher than pyiqa's",
                                a["peak_rss_large_gb"] <= b["peak_rss_large_gb"]))
    if targets:
        print()
        print("targets:")
        for what, ok in targets:
            print(f"  [{'met' if ok else 'NOT met'}] {what}")
    if args.json:
        out = {"header": header, "results": results, "targets": [{"target": t, "met": bool(ok)} for t, ok in targets]}
        with open(args.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
