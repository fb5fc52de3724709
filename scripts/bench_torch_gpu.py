#!/usr/bin/env python3
"""PyTorch reference for `dino bench gpu`: one DINO ViT-S/16 training step as DINO's
main_dino.py does it (timm ViT-S/16 with drop path 0.1, DINO head 2048/256/65536 with
weight-normalized last layer, 2x224 + 10x96 crops through multi-crop forwarding, teacher on
the globals, centered and sharpened teacher, cross-view loss, per-parameter clip 3.0, AdamW
with the WD groups, teacher EMA, center EMA), on the GPU, fp32 eager or AMP (fp16 autocast +
GradScaler, as the reference's --use_fp16). Crops are fixed random tensors (the step alone).
Prints one JSON line: median step seconds, the runs, images/s.

    python3 scripts/bench_torch_gpu.py [--batch 64] [--runs 10] [--warmup 3] [--amp] [--device cuda]
"""
import argparse
import functools
import json
import statistics
import time

import torch
import torch.nn as nn

from bench_torch import DinoHead  # the same head as the CPU engine benchmark


class MultiCrop(nn.Module):
    """DINO's MultiCropWrapper: one backbone pass per run of equal-size crops, then the head."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops):
        feats = [self.backbone(torch.cat(crops[:2])), self.backbone(torch.cat(crops[2:]))] if len(crops) > 2 \
            else [self.backbone(torch.cat(crops))]
        return self.head(torch.cat(feats))


def vit_small(drop_path):
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4,
                             qkv_bias=True, num_classes=0, drop_path_rate=drop_path, dynamic_img_size=True,
                             norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--locals", type=int, default=10)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--tf32", action="store_true", help="fp32 products in TF32 on tensor cores")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a small model, to check the script on a CPU")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = a.tf32  # fp32 means fp32 unless asked, as ours
    torch.backends.cudnn.allow_tf32 = a.tf32
    gsize, lsize = (32, 16) if a.tiny else (224, 96)
    head = (64, 32, 128) if a.tiny else (2048, 256, 65536)  # hidden, bottleneck, out
    student = MultiCrop(vit_small(0.1), DinoHead(384, *head)).to(dev)
    teacher = MultiCrop(vit_small(0.0), DinoHead(384, *head)).to(dev)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    out_dim = teacher.head.last_layer.weight.shape[0]
    named = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for n, p in named if p.ndim > 1 and not n.endswith(".bias")]},
                             {"params": [p for n, p in named if not (p.ndim > 1 and not n.endswith(".bias"))],
                              "weight_decay": 0.0}], lr=5e-4)
    scaler = torch.amp.GradScaler("cuda") if a.amp else None
    center = torch.zeros(1, out_dim, device=dev)
    crops = [torch.randn(a.batch, 3, gsize, gsize, device=dev) for _ in range(2)] + \
            [torch.randn(a.batch, 3, lsize, lsize, device=dev) for _ in range(a.locals)]
    ncrops = 2 + a.locals

    def step():
        nonlocal center
        with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=a.amp):
            t_out = teacher(crops[:2])
            s_out = student(crops)
            s = (s_out / 0.1).chunk(ncrops)
            t = nn.functional.softmax((t_out - center) / 0.04, dim=-1).detach().chunk(2)
            loss, n = 0, 0
            for iq, q in enumerate(t):
                for v in range(ncrops):
                    if v != iq:
                        loss = loss + torch.sum(-q * nn.functional.log_softmax(s[v], dim=-1), dim=-1).mean()
                        n += 1
            loss = loss / n
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
        else:
            loss.backward()
        for _, p in named:
            if p.grad is not None:
                norm = p.grad.data.norm(2)
                p.grad.data.mul_(torch.clamp(3.0 / (norm + 1e-6), max=1.0))
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        with torch.no_grad():
            torch._foreach_mul_(list(teacher.parameters()), 0.996)
            torch._foreach_add_(list(teacher.parameters()), list(student.parameters()), alpha=0.004)
            center = center * 0.9 + t_out.float().mean(dim=0, keepdim=True) * 0.1
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    times = []
    for _ in range(a.runs):
        t0 = time.perf_counter()
        loss = step()
        loss.item()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"impl": "pytorch", "amp": a.amp, "device": torch.cuda.get_device_name() if dev.type == "cuda"
                      else "cpu", "torch": torch.__version__, "batch": a.batch, "step_s": med, "runs": times,
                      "images_per_s": a.batch / med,
                      "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}))


if __name__ == "__main__":
    main()
