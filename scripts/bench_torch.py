#!/usr/bin/env python3
"""PyTorch eager reference for `dino bench engine`: the same workloads as the Rust engine
benchmark, same thread count, fp32, median of several runs. Prints one JSON object per
workload (step seconds, GFLOP/s from the caller's FLOP count, peak RSS).

    python3 scripts/bench_torch.py --workload block-fwd|block-fwdbwd|dino-step --threads 2 --runs 5
"""
import argparse
import functools
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vit_block(dim, heads, mlp):
    from timm.models.vision_transformer import Block
    return Block(dim=dim, num_heads=heads, mlp_ratio=mlp / dim, qkv_bias=True,
                 norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU)


class DinoHead(nn.Module):
    """DINO's head: 3-layer MLP, L2-normalized bottleneck, weight-normalized last layer."""

    def __init__(self, d, hidden, bottleneck, out):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1)
        self.last_layer.parametrizations.weight.original0.requires_grad = False

    def forward(self, x):
        x = nn.functional.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def small_vit(args):
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=28, patch_size=4, in_chans=1, num_classes=0, embed_dim=args.dim,
                             depth=args.depth, num_heads=args.heads, mlp_ratio=4.0, qkv_bias=True,
                             norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), dynamic_img_size=True)


def workload(args):
    if args.workload.startswith("block"):
        block = vit_block(args.dim, args.heads, args.mlp)
        x = torch.randn(args.batch, args.tokens, args.dim)
        r = torch.randn(args.batch, args.tokens, args.dim)
        if args.workload == "block-fwd":
            def step():
                with torch.no_grad():
                    block(x)
        else:
            def step():
                block.zero_grad(set_to_none=True)
                (block(x) * r).sum().backward()
        return step
    # dino-step: student on 2 global + N local crops, teacher (EMA, no grad) on the globals,
    # DINO cross-view loss with centering and sharpening, AdamW, teacher and center EMA.
    student, teacher = nn.ModuleDict({"b": small_vit(args)}), nn.ModuleDict({"b": small_vit(args)})
    student["h"] = DinoHead(args.dim, args.hidden, args.bottleneck, args.out)
    teacher["h"] = DinoHead(args.dim, args.hidden, args.bottleneck, args.out)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    params = [p for p in student.parameters() if p.requires_grad]
    decay = [p for n, p in student.named_parameters() if p.requires_grad and p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in student.named_parameters() if p.requires_grad and not (p.ndim > 1 and not n.endswith(".bias"))]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
    center = torch.zeros(1, args.out)
    g = torch.randn(2 * args.batch, 1, 28, 28)
    l = torch.randn(args.locals * args.batch, 1, 12, 12)

    def step():
        nonlocal center
        with torch.no_grad():
            t_out = teacher["h"](teacher["b"](g))
        s_out = student["h"](torch.cat([student["b"](g), student["b"](l)]))
        s = (s_out / 0.1).chunk(2 + args.locals)
        t = nn.functional.softmax((t_out - center) / 0.04, dim=-1).chunk(2)
        loss, n = 0, 0
        for iq, q in enumerate(t):
            for v in range(len(s)):
                if v == iq:
                    continue
                loss = loss + torch.sum(-q * nn.functional.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
        loss = loss / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in params:  # DINO's per-parameter clipping
            norm = p.grad.norm(2)
            coef = 3.0 / (norm + 1e-6)
            if coef < 1:
                p.grad.mul_(coef)
        opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(0.996).add_((1 - 0.996) * ps.detach())
            center = center * 0.9 + t_out.mean(dim=0, keepdim=True) * 0.1
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", required=True, choices=["block-fwd", "block-fwdbwd", "dino-step"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--mlp", type=int, default=768)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--locals", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--bottleneck", type=int, default=128)
    ap.add_argument("--out", type=int, default=1024)
    ap.add_argument("--flops", type=float, default=0.0, help="FLOPs per step, for GFLOP/s")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = rss_mb()
    step = workload(args)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch", "workload": args.workload, "threads": args.threads, "torch": torch.__version__,
        "step_s": med, "runs": times, "gflops": args.flops / med / 1e9 if args.flops else None,
        "peak_rss_mb": rss_mb(), "base_rss_mb": base,
    }))


if __name__ == "__main__":
    sys.exit(main())
