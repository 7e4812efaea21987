#!/usr/bin/env python3
"""The Fu authors' own training step against the PyTorch peer's, alternately in one process.

Times one Adam step of the authors' model (github.com/JunFu1995/CLIP-AGIQA:
their models/AGIQA.py and clip/, MaPLe-based; config/cfg_8.yaml: 8 context
tokens, text and vision depth 12, the auxiliary alignment task with weight
0.1, lr 1e-4) and one step of the peer's Fu model (scripts/bench_torch.py's
fu_step, which computes the same loss and gradients), on the same random
batch, alternating (authors, peer, then peer, authors, ...) so that both see
the same conditions on a busy or drifting machine. With --promptiqa it also
runs `promptiqa bench --mode fu --no-torch` with the same settings before and
after, so that one command gives promptiqa / authors.

Get the authors' code (it is not part of promptiqa and is never copied in):

  git clone https://github.com/JunFu1995/CLIP-AGIQA /path/to/CLIP-AGIQA
  /usr/bin/python3 scripts/bench_fu_authors.py --authors /path/to/CLIP-AGIQA \\
      [--batch 8] [--threads 2] [--warmup 2] [--rounds 5] [--promptiqa] [--count-flops]

Prints one JSON object on stdout (diagnostics on stderr): per engine the
median img/s with the slowest and fastest step (authors_fu_img_s,
peer_fu_img_s, promptiqa_fu_img_s, each with _min and _max), the seconds and
CPU seconds of each step, the ratios, the CPU, the authors' commit where DIR
is a git checkout, and the BLAS report of scripts/blas_core.py (the kernel is
pinned as for the peer, before torch loads). --count-flops adds one untimed
step of each model under torch's profiler: authors_step_flops and
peer_step_flops, their matrix-product and convolution operations (the same
work, give or take the authors' fp16 rounding of the prompts, which costs no
products).

How the authors' code is run, from DIR as it is:
  - its CLIP loader (models/AGIQA.py load_clip_to_cpu) downloads OpenAI's
    weights; here its download, torch.jit.load and torch.load are redirected
    (while the model is built) to a random ViT-B/32 state dict made with its
    own clip/model.py CLIP class (seeded), which its build_model_maple then
    loads as it would the released one;
  - ftfy, which its tokenizer imports to clean text, is stubbed by an
    identity when it is not installed (the prompts are plain ASCII: "X X X X
    X X X X good photo."); nothing else is stubbed: PIL, torchvision, tqdm,
    yaml, regex and setuptools (pkg_resources) must be importable;
  - the model is built as its CoOp class builds it (fp32, everything but the
    two prompt learners frozen) and kept on the CPU; the step is its training
    loop's: forward, MSE(score) + 0.1 MSE(alignment), backward, Adam over both
    prompt learners.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import types

import blas_core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join("config", "cfg_8.yaml")
# what their code must have for this script to run it
NEEDED = (os.path.join("models", "AGIQA.py"), os.path.join("clip", "model.py"), os.path.join("clip", "maple.py"), CONFIG)


def log(msg):
    print(f"[bench_fu_authors] {msg}", file=sys.stderr, flush=True)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authors", required=True, metavar="DIR",
                    help="a checkout of github.com/JunFu1995/CLIP-AGIQA")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps of each model first")
    ap.add_argument("--rounds", type=int, default=5, help="timed steps of each model, alternating")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--count-flops", action="store_true",
                    help="one more untimed step of each under torch's profiler: its operations")
    ap.add_argument("--promptiqa", action="store_true",
                    help="also run `promptiqa bench --mode fu --no-torch` (the built command, "
                         "bin/promptiqa.js) before and after, with the same settings")
    ap.add_argument("--node", default="node", help="the node that runs bin/promptiqa.js (default: node)")
    blas_core.add_argument(ap)
    args = ap.parse_args(argv)
    if args.batch < 1 or args.threads < 1 or args.rounds < 1 or args.warmup < 0:
        ap.error("--batch, --threads and --rounds must be >= 1 and --warmup >= 0")
    args.authors = os.path.abspath(args.authors)
    missing = [p for p in NEEDED if not os.path.isfile(os.path.join(args.authors, p))]
    if not os.path.isdir(args.authors) or missing:
        ap.error(f"--authors {args.authors}: not a checkout of the Fu authors' code "
                 f"({'no such folder' if not os.path.isdir(args.authors) else 'missing ' + ', '.join(missing)}); "
                 "get it with: git clone https://github.com/JunFu1995/CLIP-AGIQA")
    return args


if __name__ == "__main__":
    ARGS = parse_args()
    blas_core.set_threads(ARGS.threads)
    blas_core.pin_best_openblas_core()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bench_torch  # noqa: E402

# OpenAI's ViT-B/32 in the arguments of clip/model.py's CLIP: embed_dim, image_resolution,
# vision_layers, vision_width, vision_patch_size, context_length, vocab_size, and the text
# transformer's width, heads, layers
VIT_B_32 = (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12)


def import_authors(folder):
    """Their models.AGIQA module, from folder, with ftfy stubbed where missing."""
    try:
        import ftfy  # noqa: F401
    except ImportError:
        log("ftfy is not installed: stubbed by an identity (the prompts are plain ASCII)")
        sys.modules["ftfy"] = types.SimpleNamespace(fix_text=lambda text: text)
    sys.path.insert(0, folder)
    try:
        import models.AGIQA as agiqa
    except ImportError as e:
        sys.exit(f"[bench_fu_authors] the authors' code in {folder} needs {e.name}: pip install {e.name} "
                 f"(or the Debian package python3-{e.name})")
    return agiqa


@contextlib.contextmanager
def random_clip_weights(agiqa, seed):
    """While the model is built: their loader gets a random ViT-B/32 state dict
    (their own CLIP class, seeded) where it would download OpenAI's weights."""
    from clip.model import CLIP  # their clip/model.py

    torch.manual_seed(seed)
    state = CLIP(*VIT_B_32).state_dict()
    saved = agiqa.clip._download, torch.jit.load, torch.load

    def not_torchscript(*_a, **_k):
        raise RuntimeError("random weights: not a TorchScript archive")  # their loader then calls torch.load

    agiqa.clip._download = lambda url, root: "random ViT-B/32"
    torch.jit.load = not_torchscript
    torch.load = lambda *_a, **_k: dict(state)
    try:
        yield
    finally:
        agiqa.clip._download, torch.jit.load, torch.load = saved


def authors_step(folder, image, y_q, y_a, seed):
    """Their model as their CoOp builds it, and their training loop's step, as a function."""
    import yaml

    agiqa = import_authors(folder)
    with open(os.path.join(folder, CONFIG), encoding="utf8") as f:
        cfg = yaml.safe_load(f)
    # their constructors print their settings on stdout, which carries this script's JSON
    with random_clip_weights(agiqa, seed), contextlib.redirect_stdout(sys.stderr):
        net = agiqa.CoOp(cfg).model.to("cpu")
    solver = torch.optim.Adam([{"params": net.prompt_learner_aux.parameters()},
                               {"params": net.prompt_learner_tar.parameters()}], cfg["OPTIM"]["LR"])
    lamda = cfg["TRAINER"]["Ours"]["lamda"]

    def step():
        score, aligned = net(image, None)
        solver.zero_grad()
        loss = F.mse_loss(score, y_q.view(len(score), 1))
        aux = F.mse_loss(aligned, y_a.view(len(score), 1))
        (loss + lamda * aux).backward()
        solver.step()

    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return step, trainable


def peer_step(image, seed):
    """bench_torch.py's Fu step (8 prompt tokens, as cfg_8), its own random CLIP; .trainable counts its parameters."""
    torch.manual_seed(seed)
    patch, width, layers, heads, embed_dim = bench_torch.ARCHS["vit-b-32"]
    visual = bench_torch.freeze(bench_torch.VisionTransformer(patch, width, layers, heads, embed_dim))
    textenc = bench_torch.freeze(bench_torch.TextTransformer(embed_dim))
    return bench_torch.fu_step(visual, textenc, image, 8)


def timed(fn):
    """(wall seconds, CPU seconds of this process) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def rates(prefix, batch, seconds, out):
    out[f"{prefix}_fu_img_s"] = batch / statistics.median(seconds)
    out[f"{prefix}_fu_img_s_min"] = batch / max(seconds)
    out[f"{prefix}_fu_img_s_max"] = batch / min(seconds)


def run_promptiqa(args):
    """One `promptiqa bench --mode fu --no-torch --json` with this script's settings: its per-run seconds."""
    cmd = [args.node, os.path.join(ROOT, "bin", "promptiqa.js"), "bench", "--arch", "vit-b-32", "--mode", "fu",
           "--batch", str(args.batch), "--threads", str(args.threads), "--warmup", str(args.warmup),
           "--iters", str(args.rounds), "--no-torch", "--no-peak", "--no-placement", "--json", "--quiet"]
    log(" ".join(cmd[1:]))
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"[bench_fu_authors] promptiqa bench failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["fu_s"]


def git_commit(folder):
    try:
        r = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def main(args):
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    report = blas_core.blas_report(torch)
    info = blas_core.cpu_info()
    result = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "cpu": info["model"] if info else None,
        **report,
        "blas_threads": blas_core.blas_threads(report["blas"]),
        "authors_commit": git_commit(args.authors),
    }
    promptiqa_s = run_promptiqa(args) if args.promptiqa else []

    gen = torch.Generator().manual_seed(args.seed)
    image = torch.randn(args.batch, 3, 224, 224, generator=gen)
    y_q, y_a = torch.rand(args.batch, generator=gen), torch.rand(args.batch, generator=gen)
    log(f"building the authors' model from {args.authors}")
    authors, trainable = authors_step(args.authors, image, y_q, y_a, args.seed)
    log("building the peer's model")
    peer = peer_step(image, args.seed)
    # the same learners: both count 14.4 M trainable parameters at 8 tokens
    result["authors_trainable_params"] = trainable
    result["peer_trainable_params"] = peer.trainable

    for _ in range(args.warmup):
        authors()
        peer()
    steps = {"authors": ([], []), "peer": ([], [])}
    for r in range(args.rounds):
        # authors first in even rounds, peer first in odd ones: a drift hits both alike
        for name in (("authors", "peer") if r % 2 == 0 else ("peer", "authors")):
            wall, cpu = timed(authors if name == "authors" else peer)
            steps[name][0].append(wall)
            steps[name][1].append(cpu)
        log(f"round {r + 1}: authors {args.batch / steps['authors'][0][-1]:.2f}, "
            f"peer {args.batch / steps['peer'][0][-1]:.2f} img/s")
    for name, (wall, cpu) in steps.items():
        rates(name, args.batch, wall, result)
        result[f"{name}_s"] = wall
        result[f"{name}_cpu_s"] = cpu
    result["peer_over_authors"] = result["peer_fu_img_s"] / result["authors_fu_img_s"]

    if args.count_flops:
        result["authors_step_flops"] = bench_torch.count_flops(authors)
        result["peer_step_flops"] = bench_torch.count_flops(peer)

    if args.promptiqa:
        promptiqa_s += run_promptiqa(args)
        rates("promptiqa", args.batch, promptiqa_s, result)
        result["promptiqa_s"] = promptiqa_s
        result["promptiqa_over_authors"] = result["promptiqa_fu_img_s"] / result["authors_fu_img_s"]
    print(json.dumps(result))


if __name__ == "__main__":
    main(ARGS)
