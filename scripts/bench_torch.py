#!/usr/bin/env python3
"""PyTorch peer of promptiqa's benchmark.

Builds CLIP's vision (and, for the "fu" mode, text) transformer from scratch
with random weights, then times three workloads on the CPU in fp32:

  forward  image features under torch.no_grad()
  train    forward + backward w.r.t. deep visual prompts (CLIP frozen)
  fu       one full Adam step of the two-branch "Fu" prompt learner

Usage:
  /usr/bin/python3 scripts/bench_torch.py --arch vit-b-32 --batch 8 \
      --threads 2 --warmup 1 --iters 3 [--mode forward,train,fu] [--prompts 8]

Prints exactly one JSON object on stdout; diagnostics go to stderr.

Layout note: like OpenAI's CLIP, the transformers run sequence-first
([tokens, batch, width]) through nn.MultiheadAttention(batch_first=False).
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name -> (patch, width, layers, heads, embed_dim); input is always 224x224
ARCHS = {
    "vit-b-32": (32, 768, 12, 12, 512),
    "vit-b-16": (16, 768, 12, 12, 512),
    "vit-l-14": (14, 1024, 24, 16, 768),
}
IMAGE_SIZE = 224

# CLIP text tower (same for the three architectures above, except embed_dim)
TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS = 512, 12, 8
CONTEXT_LEN, VOCAB = 77, 49408
SOT, EOT = 49406, 49407
EOT_POS = 12  # position of the EOT token in the synthetic class prompts


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
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * 4), QuickGELU(), nn.Linear(width * 4, width)
        )
        self.attn_mask = attn_mask

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


def replace_last(x, prompt):
    """Replace the last n tokens of x [L, N, D] by prompt [n, D] (all images)."""
    n = prompt.shape[0]
    p = prompt.unsqueeze(1).expand(n, x.shape[1], x.shape[2])
    return torch.cat([x[:-n], p], dim=0)


class VisionTransformer(nn.Module):
    def __init__(self, patch, width, layers, heads, embed_dim):
        super().__init__()
        scale = width ** -0.5
        grid = IMAGE_SIZE // patch
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads) for _ in range(layers)]
        )
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
        for i, block in enumerate(self.blocks):
            if prompts and 1 <= i < len(prompts):
                x = replace_last(x, prompts[i])
            x = block(x)
        x = self.ln_post(x[0])                                 # CLS token
        return x @ self.proj


class TextTransformer(nn.Module):
    def __init__(self, embed_dim):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB, TEXT_WIDTH)
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(CONTEXT_LEN, TEXT_WIDTH))
        # causal mask: -inf above the diagonal
        mask = torch.full((CONTEXT_LEN, CONTEXT_LEN), float("-inf")).triu_(1)
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(TEXT_WIDTH, TEXT_HEADS, mask) for _ in range(TEXT_LAYERS)]
        )
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
        for i, block in enumerate(self.blocks):
            if 1 <= i <= len(deep):
                p = deep[i - 1].unsqueeze(1).expand(n, c, -1)
                x = torch.cat([x[:1], p, x[1 + n:]], dim=0)
            x = block(x)
        x = self.ln_final(x.transpose(0, 1))                   # [C, 77, 512]
        eot = tokens.argmax(dim=-1)                            # EOT has the largest id
        return x[torch.arange(c), eot] @ self.text_projection


def freeze(module):
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def prob_first(img_feat, text_feat):
    """softmax(100 * cos(img, text)) -> probability of class 0, shape [N]."""
    img = F.normalize(img_feat, dim=-1)
    txt = F.normalize(text_feat, dim=-1)
    return (100.0 * img @ txt.t()).softmax(dim=-1)[:, 0]


# ---------------------------------------------------------------- timing


def time_it(fn, warmup, iters):
    """Run fn warmup times untimed, then iters times; return per-iter seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def params(shape_n, width, sets):
    return [nn.Parameter(0.02 * torch.randn(shape_n, width)) for _ in range(sets)]


# ---------------------------------------------------------------- workloads


def bench_forward(visual, image, warmup, iters):
    def step():
        with torch.no_grad():
            visual(image)

    return time_it(step, warmup, iters)


def bench_train(visual, image, embed_dim, n_prompts, warmup, iters):
    width, layers = visual.class_embedding.shape[0], len(visual.blocks)
    prompts = params(n_prompts, width, layers)          # input + layers 1..L-1
    text = F.normalize(torch.randn(2, embed_dim), dim=-1)
    target = torch.rand(image.shape[0])

    def step():
        for p in prompts:
            p.grad = None
        q = prob_first(visual(image, prompts), text)
        F.mse_loss(q, target).backward()

    return time_it(step, warmup, iters)


def bench_fu(visual, textenc, image, n_prompts, warmup, iters):
    width, layers = visual.class_embedding.shape[0], len(visual.blocks)
    n = n_prompts
    batch = image.shape[0]

    # visual prompts: input + (layers - 1) deep sets, for each branch
    aux_v = params(n, width, layers)
    tgt_v = params(n, width, layers)
    fuse = nn.ModuleList([nn.Linear(2 * width, width) for _ in range(layers)])
    # text prompts: context + 11 deep sets, for each branch
    aux_ctx, tgt_ctx = params(n, TEXT_WIDTH, 1)[0], params(n, TEXT_WIDTH, 1)[0]
    aux_t = params(n, TEXT_WIDTH, TEXT_LAYERS - 1)
    tgt_t = params(n, TEXT_WIDTH, TEXT_LAYERS - 1)

    # two class prompts: [SOT, random ids..., EOT at EOT_POS, 0 padding]
    tokens = torch.zeros(2, CONTEXT_LEN, dtype=torch.long)
    tokens[:, 0] = SOT
    tokens[:, 1:EOT_POS] = torch.randint(1, SOT, (2, EOT_POS - 1))
    tokens[:, EOT_POS] = EOT

    y_q, y_a = torch.rand(batch), torch.rand(batch)
    trainable = (aux_v + tgt_v + list(fuse.parameters())
                 + [aux_ctx, tgt_ctx] + aux_t + tgt_t)
    opt = torch.optim.Adam(trainable, lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        # alignment branch: auxiliary prompts
        a_img = visual(image, aux_v)
        a_txt = textenc(tokens, aux_ctx, aux_t)
        a = prob_first(a_img, a_txt)
        # quality branch: target prompts fused with auxiliary ones per depth
        fused = [fuse[d](torch.cat([tgt_v[d], aux_v[d]], dim=-1)) for d in range(layers)]
        q_img = visual(image, fused)
        q_txt = textenc(tokens, tgt_ctx, tgt_t)
        q = prob_first(q_img, q_txt)
        loss = F.mse_loss(q, y_q) + 0.1 * F.mse_loss(a, y_a)
        loss.backward()
        opt.step()

    return time_it(step, warmup, iters)


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="vit-b-32", choices=sorted(ARCHS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--mode", default="forward,train,fu",
                    help="comma-separated subset of forward,train,fu")
    ap.add_argument("--prompts", type=int, default=8, help="prompt tokens per set")
    args = ap.parse_args()

    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    bad = [m for m in modes if m not in ("forward", "train", "fu")]
    if bad or not modes:
        ap.error(f"unknown mode(s): {bad or args.mode}")
    if args.iters < 1 or args.batch < 1 or args.threads < 1 or args.warmup < 0:
        ap.error("--iters, --batch, --threads must be >= 1 and --warmup >= 0")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Debian's torch links the reference (netlib) BLAS: Linear layers then run
    # single-threaded and unblocked, far slower than MKL/OpenBLAS builds.
    if "BLAS_INFO=generic" in torch.__config__.show():
        log("[bench_torch] warning: torch uses the generic reference BLAS "
            "(BLAS_INFO=generic); fp32 matmuls are slow and ignore --threads")

    patch, width, layers, heads, embed_dim = ARCHS[args.arch]
    visual = freeze(VisionTransformer(patch, width, layers, heads, embed_dim)).eval()
    textenc = freeze(TextTransformer(embed_dim)).eval() if "fu" in modes else None
    image = torch.randn(args.batch, 3, IMAGE_SIZE, IMAGE_SIZE)

    result = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "arch": args.arch,
        "batch": args.batch,
    }
    runs = {}
    if "forward" in modes:
        log(f"[bench_torch] forward {args.arch} batch={args.batch}")
        runs["forward"] = bench_forward(visual, image, args.warmup, args.iters)
    if "train" in modes:
        log(f"[bench_torch] train {args.arch} batch={args.batch}")
        runs["train"] = bench_train(visual, image, embed_dim, args.prompts,
                                    args.warmup, args.iters)
    if "fu" in modes:
        log(f"[bench_torch] fu {args.arch} batch={args.batch}")
        runs["fu"] = bench_fu(visual, textenc, image, args.prompts,
                              args.warmup, args.iters)

    rate_key = {"forward": "forward_img_s", "train": "train_img_s", "fu": "fu_train_img_s"}
    list_key = {"forward": "forward_s", "train": "train_s", "fu": "fu_s"}
    for m, secs in runs.items():
        result[rate_key[m]] = args.batch / statistics.median(secs)
    for m, secs in runs.items():
        result[list_key[m]] = secs
        log(f"[bench_torch] {m}: median {statistics.median(secs):.3f} s, "
            f"{result[rate_key[m]]:.2f} img/s")

    print(json.dumps(result))


if __name__ == "__main__":
    main()
