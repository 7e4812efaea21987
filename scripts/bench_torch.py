#!/usr/bin/env python3
"""PyTorch peer of promptiqa's benchmark.

Builds CLIP's vision (and, for the "fu" mode, text) transformer from scratch
with random weights, then times three workloads in fp32 (on the CPU, or on
CUDA: see Device below):

  forward  image features (inference mode)
  train    forward + backward w.r.t. deep visual prompts (CLIP frozen); for
           the ResNet archs (no prompt tokens) backward w.r.t. the pixels
  fu       one full Adam step of Fu's two-branch prompt learner, as the
           authors' MaPLe-based code trains it: an auxiliary learner and a
           target learner (each: 8 context tokens, 11 deep text prompt sets,
           12 visual prompt sets), both text encoders, two vision passes (the
           target's visual prompts are Linear(1536->768) of its own and the
           auxiliary's at each depth), MSE(quality) + 0.1 MSE(alignment)

Usage:
  /usr/bin/python3 scripts/bench_torch.py --arch vit-b-32 --batch 8 \
      --threads 2 --warmup 2 --iters 3 [--mode forward,train,fu] [--prompts 8] \
      [--device cpu|cuda|webgpu] [--no-peak | --peak-sizes 1024,2048] \
      [--blas-core auto|keep|CORE]

Prints exactly one JSON object on stdout; diagnostics go to stderr.

Device: --device names the provider promptiqa's own figures ran on. For a GPU
provider (cuda, webgpu) the peer runs on CUDA when this torch has it
(torch.cuda.is_available(); model and inputs moved there, TF32 off so that
products stay fp32, torch.cuda.synchronize() before each timer stop),
else on the CPU; the JSON says which ("device": "cuda" or "cpu", and "gpu",
the GPU's name, on CUDA).

Threads: the script fixes every thread pool itself before torch is loaded,
so the figures do not depend on the caller's environment. torch's OpenMP
pool and the BLAS's own pool (Debian's torch calls OpenBLAS, which keeps a
separate pthread pool) both get --threads; OpenBLAS's idle workers sleep at
once instead of spinning for ~0.1 s, because a spinning BLAS worker steals
the core from torch's OpenMP worker between matrix products (the pools never
run at the same time). Inter-op threads are 1: these graphs have no
independent branches worth running concurrently.

OpenBLAS kernel: before torch loads, blas_core.pin_best_openblas_core()
restarts the script with the best OpenBLAS kernel this CPU supports where
OpenBLAS's own choice falls short (an old SSE kernel on a CPU it does not
recognise; see scripts/blas_core.py and --blas-core); the JSON names the
kernel that ran (blas_core), what OpenBLAS chose (blas_core_detected), the
caller's OPENBLAS_CORETYPE (blas_core_env), whether it was replaced
(blas_core_pinned) and the error of a float32 product against float64
(blas_check; the script stops when it is wrong), and the CPU ("cpu").

Peak: unless --no-peak, torch.mm's float32 rate at each of --peak-sizes
(square; per run the work of two 2048^3 products, as promptiqa's own peak in
src/bench/peak.ts), after --warmup (at least 1) untimed runs, the median of
--iters; the best size gives peak_gflop_s: the ceiling this engine's matrix
products reach here, beside promptiqa's.

Layout note: like OpenAI's CLIP, the transformers run sequence-first
([tokens, batch, width]) through nn.MultiheadAttention(batch_first=False),
and parameters carry CLIP's state-dict names (transformer.resblocks.N...),
so a real CLIP state dict loads into them.
"""

import argparse
import json
import statistics
import sys
import time

import blas_core


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit-b-32", choices=("vit-b-32", "vit-b-16", "vit-l-14", "rn50", "rn101", "rn50x4", "rn50x16", "rn50x64"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--mode", default="forward,train,fu",
                    help="comma-separated subset of forward,train,fu")
    ap.add_argument("--prompts", type=int, default=8, help="prompt tokens per set")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "webgpu"),
                    help="the provider promptiqa ran on: on cuda or webgpu the peer runs on "
                         "CUDA where torch has it, else on the CPU")
    ap.add_argument("--peak", action=argparse.BooleanOptionalAction, default=True,
                    help="time torch.mm at --peak-sizes for the matrix-product ceiling (default on)")
    ap.add_argument("--peak-sizes", default="1024,2048", help="comma-separated square sizes of the peak")
    ap.add_argument("--count-flops", action="store_true",
                    help="after each mode's timed runs, one more untimed step under torch's profiler: "
                         "<mode>_flops, its matrix-product and convolution operations")
    blas_core.add_argument(ap)
    args = ap.parse_args(argv)
    try:
        args.peak_sizes = [int(n) for n in args.peak_sizes.split(",") if n.strip()]
    except ValueError:
        ap.error(f"--peak-sizes: not a comma-separated list of integers: {args.peak_sizes}")
    if args.peak and (not args.peak_sizes or min(args.peak_sizes) < 1):
        ap.error("--peak-sizes needs at least one size >= 1")
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("forward", "train", "fu")]
    if bad or not modes:
        ap.error(f"unknown mode(s): {bad or args.mode}")
    if args.iters < 1 or args.batch < 1 or args.threads < 1 or args.warmup < 0 or args.prompts < 1:
        ap.error("--iters, --batch, --threads, --prompts must be >= 1 and --warmup >= 0")
    if args.arch.startswith("rn") and "fu" in modes:
        ap.error("the fu mode needs a ViT arch (its prompts are visual tokens)")
    args.modes = modes
    return args


# Thread pools read their sizes when the libraries load: set them before torch
# is imported (only when run as a script; an importer owns its environment).
if __name__ == "__main__":
    ARGS = parse_args()
    blas_core.set_threads(ARGS.threads)
    # after the thread variables: the OpenBLAS it loads to ask is the one torch gets
    blas_core.pin_best_openblas_core()

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# name -> (patch, width, layers, heads, embed_dim); input is always 224x224
ARCHS = {
    "vit-b-32": (32, 768, 12, 12, 512),
    "vit-b-16": (16, 768, 12, 12, 512),
    "vit-l-14": (14, 1024, 24, 16, 768),
}
IMAGE_SIZE = 224

# OpenAI's ResNet CLIPs: name -> (blocks per stage, stem width, embed_dim, native input side)
RESNET_ARCHS = {
    "rn50": ((3, 4, 6, 3), 64, 1024, 224),
    "rn101": ((3, 4, 23, 3), 64, 512, 224),
    "rn50x4": ((4, 6, 10, 6), 80, 640, 288),
    "rn50x16": ((6, 8, 18, 8), 96, 768, 384),
    "rn50x64": ((3, 15, 36, 10), 128, 1024, 448),
}

# CLIP text tower (same for the three architectures above, except embed_dim)
TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS = 512, 12, 8
CONTEXT_LEN, VOCAB = 77, 49408
SOT, EOT = 49406, 49407
EOT_POS = 12  # EOT of "SOT X*8 good photo . EOT": the class prompts' length
LOGIT_SCALE = 100.0  # exp(logit_scale) of the released CLIPs


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- CLIP model


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """CLIP block: x + attn(ln_1(x)); x + mlp(ln_2(x)). Input is [L, N, D]."""

    def __init__(self, width, heads, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)
        # a buffer, so that it moves with the module to the GPU; not in the state dict
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)]
        )


class VisionTransformer(nn.Module):
    def __init__(self, patch, width, layers, heads, embed_dim):
        super().__init__()
        scale = width ** -0.5
        grid = IMAGE_SIZE // patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))

    def forward(self, image, prompts=None):
        """image [N,3,224,224] -> features [N, embed_dim].

        prompts: optional list of [n, width] tensors (deep visual prompts).
        prompts[0] is appended after [CLS]+patches (after the positional
        embedding, before ln_pre); prompts[i] (i >= 1) replaces the last n
        tokens before block i.
        """
        x = self.conv1(image)                                  # [N, W, g, g]
        x = x.flatten(2).transpose(1, 2)                       # [N, g*g, W]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        if prompts:
            n = prompts[0].shape[0]
            x = torch.cat([x, prompts[0].expand(x.shape[0], n, -1)], dim=1)
        x = self.ln_pre(x).transpose(0, 1)                     # [L, N, W]
        for i, block in enumerate(self.transformer.resblocks):
            if prompts and 1 <= i < len(prompts):
                p = prompts[i]
                x = torch.cat([x[:-p.shape[0]], p.unsqueeze(1).expand(-1, x.shape[1], -1)], dim=0)
            x = block(x)
        x = self.ln_post(x[0])                                 # CLS token
        return x @ self.proj


def conv_bn(cin, cout, k, stride=1):
    """A bias-free conv and its BatchNorm (frozen: inference statistics)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout))


class Bottleneck(nn.Module):
    """CLIP's anti-aliased bottleneck: 1x1, 3x3, avg-pool(stride), 1x1 (x4); the
    shortcut pools and projects when the stride or the width changes."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn(inplanes, planes, 1), nn.ReLU(),
            conv_bn(planes, planes, 3), nn.ReLU(),
            nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
            conv_bn(planes, planes * 4, 1),
        )
        self.shortcut = nn.Identity()
        if stride > 1 or inplanes != planes * 4:
            self.shortcut = nn.Sequential(nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                                          conv_bn(inplanes, planes * 4, 1))

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class ResNetTower(nn.Module):
    """CLIP's ModifiedResNet: 3-conv stem + avg pool 2, four stages, attention
    pool (mean token as the query) over 32*width channels."""

    def __init__(self, layers, width, embed_dim, side):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(3, width // 2, 3, stride=2), nn.ReLU(),
            conv_bn(width // 2, width // 2, 3), nn.ReLU(),
            conv_bn(width // 2, width, 3), nn.ReLU(),
            nn.AvgPool2d(2),
        )
        blocks, inplanes = [], width
        for stage, n in enumerate(layers):
            planes = width * 2 ** stage
            for i in range(n):
                blocks.append(Bottleneck(inplanes, planes, 2 if i == 0 and stage > 0 else 1))
                inplanes = planes * 4
        self.stages = nn.Sequential(*blocks)
        e = width * 32
        self.heads = e // 64
        self.positional_embedding = nn.Parameter(torch.randn((side // 32) ** 2 + 1, e) / e ** 0.5)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(e, e), nn.Linear(e, e), nn.Linear(e, e)
        self.c_proj = nn.Linear(e, embed_dim)

    def forward(self, image):
        x = self.stages(self.stem(image)).flatten(2).transpose(1, 2)          # [N, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding
        n, s, e = x.shape
        dh = e // self.heads
        q = self.q_proj(x[:, :1]).view(n, 1, self.heads, dh).transpose(1, 2)
        k = self.k_proj(x).view(n, s, self.heads, dh).transpose(1, 2)
        v = self.v_proj(x).view(n, s, self.heads, dh).transpose(1, 2)
        att = (q @ k.transpose(-1, -2) / dh ** 0.5).softmax(dim=-1) @ v     # [N, h, 1, dh]
        return self.c_proj(att.transpose(1, 2).reshape(n, e))


def train_pixels_step(visual, image, embed_dim):
    """The ResNet's train step: the same loss, backward to the pixels."""
    text = F.normalize(torch.randn(2, embed_dim), dim=-1).to(image.device)
    target = torch.rand(image.shape[0]).to(image.device)
    pixels = image.clone().requires_grad_(True)

    def step():
        pixels.grad = None
        F.mse_loss(prob_first(visual(pixels), text), target).backward()

    return step


class TextTransformer(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, TEXT_WIDTH)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(CONTEXT_LEN, TEXT_WIDTH))
        # causal mask: -inf above the diagonal
        mask = torch.full((CONTEXT_LEN, CONTEXT_LEN), float("-inf")).triu_(1)
        self.transformer = Transformer(TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS, mask)
        self.ln_final = nn.LayerNorm(TEXT_WIDTH)
        self.text_projection = nn.Parameter(TEXT_WIDTH ** -0.5 * torch.randn(TEXT_WIDTH, embed_dim))

    def forward(self, tokens, ctx, deep):
        """tokens [C, 77] -> features [C, embed_dim].

        ctx [n, 512] replaces token positions 1..n of the embeddings;
        deep[i-1] [n, 512] replaces positions 1..n before block i (i >= 1).
        """
        n = ctx.shape[0]
        c = tokens.shape[0]
        x = self.token_embedding(tokens)                       # [C, 77, 512]
        x = torch.cat([x[:, :1], ctx.expand(c, n, -1), x[:, 1 + n:]], dim=1)
        x = (x + self.positional_embedding).transpose(0, 1)    # [77, C, 512]
        for i, block in enumerate(self.transformer.resblocks):
            if 1 <= i <= len(deep):
                p = deep[i - 1].unsqueeze(1).expand(n, c, -1)
                x = torch.cat([x[:1], p, x[1 + n:]], dim=0)
            x = block(x)
        x = self.ln_final(x.transpose(0, 1))                   # [C, 77, 512]
        eot = tokens.argmax(dim=-1)                            # EOT has the largest id
        return x[torch.arange(c, device=x.device), eot] @ self.text_projection


def freeze(module):
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def prob_first(img_feat, text_feat):
    """softmax(100 * cos(img, text)) -> probability of class 0, shape [N]."""
    img = F.normalize(img_feat, dim=-1)
    txt = F.normalize(text_feat, dim=-1)
    return (LOGIT_SCALE * img @ txt.t()).softmax(dim=-1)[:, 0]


def params(n, width, sets):
    """sets prompt tensors [n, width], N(0, 0.02) as CoOp/MaPLe initialise them."""
    return nn.ParameterList([nn.Parameter(0.02 * torch.randn(n, width)) for _ in range(sets)])


def class_tokens(n_ctx):
    """Two class prompts [SOT, n_ctx context slots, 3 random ids, EOT, 0...]."""
    tokens = torch.zeros(2, CONTEXT_LEN, dtype=torch.long)
    tokens[:, 0] = SOT
    tokens[:, 1:n_ctx + 4] = torch.randint(1, SOT, (2, n_ctx + 3))
    tokens[:, n_ctx + 4] = EOT
    return tokens


# ---------------------------------------------------------------- Fu


class FuLearner(nn.Module):
    """One of Fu's two prompt learners: context, deep text and visual prompts.

    With fuse=True (the target learner) it also owns one Linear(2W -> W) per
    visual depth, applied to [own prompt, auxiliary prompt] at that depth.
    """

    def __init__(self, n, vision_width, vision_depth, fuse):
        super().__init__()
        self.ctx = nn.Parameter(0.02 * torch.randn(n, TEXT_WIDTH))
        self.text = params(n, TEXT_WIDTH, TEXT_LAYERS - 1)
        self.vis = params(n, vision_width, vision_depth)
        self.fuse = nn.ModuleList(
            [nn.Linear(2 * vision_width, vision_width) for _ in range(vision_depth)]
        ) if fuse else None

    def visual(self, aux=None):
        if self.fuse is None:
            return list(self.vis)
        return [f(torch.cat([v, a], dim=-1)) for f, v, a in zip(self.fuse, self.vis, aux)]


class Fu(nn.Module):
    """The authors' CustomCLIP.forward: alignment branch, then quality branch."""

    def __init__(self, visual, textenc, n):
        super().__init__()
        width, depth = visual.class_embedding.shape[0], len(visual.transformer.resblocks)
        self.visual, self.textenc = visual, textenc
        self.aux = FuLearner(n, width, depth, fuse=False)
        self.target = FuLearner(n, width, depth, fuse=True)
        self.register_buffer("aux_tokens", class_tokens(n))
        self.register_buffer("target_tokens", class_tokens(n))

    def forward(self, image):
        aux_vis = self.aux.visual()
        a = prob_first(self.visual(image, aux_vis),
                       self.textenc(self.aux_tokens, self.aux.ctx, list(self.aux.text)))
        q = prob_first(self.visual(image, self.target.visual(aux_vis)),
                       self.textenc(self.target_tokens, self.target.ctx, list(self.target.text)))
        return q, a


def fu_loss(q, a, y_q, y_a, align_weight=0.1):
    return F.mse_loss(q, y_q) + align_weight * F.mse_loss(a, y_a)


# ---------------------------------------------------------------- timing


def time_it(fn, warmup, iters, sync=None):
    """Run fn warmup times untimed, then iters times; return per-iter seconds.
    sync (torch.cuda.synchronize on a GPU) waits for the queued work to end:
    before the first timer starts and before each timer stops."""
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------- peak


PEAK_WORK = 2 * 2 * 2048 ** 3  # operations per timed run: two 2048^3 products (as src/bench/peak.ts)


def peak_products(n):
    """Products per run at size n, for PEAK_WORK operations per run."""
    return max(1, round(PEAK_WORK / (2 * n ** 3)))


def bench_peak(sizes, warmup, iters, device, sync=None):
    """torch.mm's best float32 GFLOP/s over square sizes: (best, its size, {size: GFLOP/s})."""
    gen = torch.Generator().manual_seed(1)
    by_size = {}
    for n in sizes:
        a = torch.randn(n, n, generator=gen).to(device)
        b = torch.randn(n, n, generator=gen).to(device)
        c = torch.empty(n, n, device=device)
        k = peak_products(n)

        def step():
            for _ in range(k):
                torch.mm(a, b, out=c)

        secs = time_it(step, max(1, warmup), iters, sync)
        by_size[n] = k * 2 * n ** 3 / statistics.median(secs) / 1e9
    best = max(by_size, key=by_size.get)
    return by_size[best], best, by_size


# ---------------------------------------------------------------- workloads


def count_flops(fn):
    """The floating-point operations of one call of fn in matrix products and
    convolutions, as torch's profiler counts them (with_flops), to check the
    operation counts promptiqa's GFLOP/s figures use against the work done."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return sum(e.flops for e in prof.key_averages() if e.key in FLOP_OPS)


FLOP_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::conv2d")


def forward_step(visual, image):
    def step():
        with torch.inference_mode():
            visual(image)

    return step


def train_step(visual, image, embed_dim, n_prompts):
    """Forward + backward to deep visual prompts at every layer, as a function."""
    width, layers = visual.class_embedding.shape[0], len(visual.transformer.resblocks)
    prompts = params(n_prompts, width, layers).to(image.device)  # input + layers 1..L-1
    text = F.normalize(torch.randn(2, embed_dim), dim=-1).to(image.device)
    target = torch.rand(image.shape[0]).to(image.device)

    def step():
        for p in prompts:
            p.grad = None
        q = prob_first(visual(image, list(prompts)), text)
        F.mse_loss(q, target).backward()

    return step


def fu_step(visual, textenc, image, n_prompts):
    """One Adam step of Fu's two prompt learners on image (a batch), as a function."""
    model = Fu(visual, textenc, n_prompts).to(image.device)
    batch = image.shape[0]
    y_q, y_a = torch.rand(batch).to(image.device), torch.rand(batch).to(image.device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        q, a = model(image)
        fu_loss(q, a, y_q, y_a).backward()
        opt.step()

    step.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step


# ---------------------------------------------------------------- main


def pick_device(requested, cuda_available):
    """CUDA when promptiqa ran on a GPU provider and this torch has CUDA, else the CPU."""
    return "cuda" if requested in ("cuda", "webgpu") and cuda_available else "cpu"


def main(args):
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    report = blas_core.blas_report(torch)
    # Debian's torch is built against the generic BLAS interface: it is fast only
    # when the system's libblas.so.3 is an optimised one (libopenblas0-pthread).
    blas = report["blas"]
    if blas is not None and "openblas" not in blas and "mkl" not in blas and blas != "built in":
        log(f"[bench_torch] warning: torch's BLAS is {blas}, not OpenBLAS; "
            "fp32 matrix products may be slow and ignore --threads")
    if report["blas_core"] is not None:
        log(f"[bench_torch] OpenBLAS {report['blas_core']}"
            f"{' (pinned; OpenBLAS chose ' + str(report['blas_core_detected']) + ')' if report['blas_core_pinned'] else ''}"
            f", float32 product within {report['blas_check']:.1e} of float64")

    device = pick_device(args.device, torch.cuda.is_available())
    sync = None
    gpu = None
    if device == "cuda":
        # fp32 products, as promptiqa's: no TF32 (cuDNN's convolutions would use it by default)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        sync = torch.cuda.synchronize
        gpu = torch.cuda.get_device_name(0)
        log(f"[bench_torch] on cuda ({gpu})")
    elif args.device != "cpu":
        log(f"[bench_torch] on the CPU: this torch has no CUDA (promptiqa ran on {args.device})")

    modes = args.modes
    resnet = args.arch in RESNET_ARCHS
    if resnet:
        rn_layers, rn_width, embed_dim, side = RESNET_ARCHS[args.arch]
        visual = freeze(ResNetTower(rn_layers, rn_width, embed_dim, side))
    else:
        patch, width, layers, heads, embed_dim = ARCHS[args.arch]
        visual = freeze(VisionTransformer(patch, width, layers, heads, embed_dim))
        side = IMAGE_SIZE
    textenc = freeze(TextTransformer(embed_dim)) if "fu" in modes else None
    image = torch.randn(args.batch, 3, side, side)
    # made on the CPU from the same seed whatever the device, then moved
    visual.to(device)
    if textenc is not None:
        textenc.to(device)
    image = image.to(device)

    info = blas_core.cpu_info()
    result = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        **report,
        "blas_threads": blas_core.blas_threads(blas),
        "cpu": info["model"] if info else None,
        "arch": args.arch,
        "batch": args.batch,
        "device": device,
    }
    if gpu is not None:
        result["gpu"] = gpu
    if args.peak:
        log(f"[bench_torch] peak: torch.mm at {', '.join(map(str, args.peak_sizes))}")
        result["peak_gflop_s"], result["peak_size"], by_size = bench_peak(
            args.peak_sizes, args.warmup, args.iters, device, sync)
        result["peak_gflop_s_by_size"] = {str(n): v for n, v in by_size.items()}
        log(f"[bench_torch] peak: {result['peak_gflop_s']:.1f} GFLOP/s at {result['peak_size']}")
    runs = {}
    for m in modes:
        log(f"[bench_torch] {m} {args.arch} batch={args.batch}")
        if m == "forward":
            step = forward_step(visual, image)
        elif m == "train":
            step = (train_pixels_step(visual, image, embed_dim) if resnet
                    else train_step(visual, image, embed_dim, args.prompts))
        else:
            step = fu_step(visual, textenc, image, args.prompts)
        runs[m] = time_it(step, args.warmup, args.iters, sync)
        if args.count_flops:
            result[f"{m}_flops"] = count_flops(step)

    rate_key = {"forward": "forward_img_s", "train": "train_img_s", "fu": "fu_train_img_s"}
    list_key = {"forward": "forward_s", "train": "train_s", "fu": "fu_s"}
    for m, secs in runs.items():
        result[rate_key[m]] = args.batch / statistics.median(secs)
        result[list_key[m]] = secs
        log(f"[bench_torch] {m}: img/s min {args.batch / max(secs):.2f}, "
            f"median {result[rate_key[m]]:.2f}, max {args.batch / min(secs):.2f}")

    print(json.dumps(result))


if __name__ == "__main__":
    main(ARGS)
