#!/usr/bin/env python3
"""PyTorch reference of `dino train --model fmnist-small`: the same DINO recipe on
Fashion-MNIST with timm's ViT and torchvision's augmentations, for the quality and the
throughput comparison in the training issue. Never used by CI.

    python3 scripts/train_torch_dino.py --threads 2 --max-steps 60        # throughput only
    python3 scripts/train_torch_dino.py --threads 2 --knn                  # the full 2 epochs

Recipe (the preset's declared defaults): ViT dim 128, depth 6, heads 4, patch 4 on 28x28x1,
drop path 0.1 (student); head 512/128/1024, norm_last_layer; 2 global 28 px crops scale
(0.4, 1) + 6 local 12 px crops (0.05, 0.4); flip 0.5; brightness/contrast jitter 0.4, p 0.8;
Gaussian blur kernel 3, sigma 0.1..1, p 1.0 / 0.1 / 0.5; solarize 128, p 0.2 on global 2;
normalize 0.2860 / 0.3530; batch 64; AdamW lr 5e-4 * 64/256, 0.5-epoch warmup, cosine to
1e-6; wd 0.04 -> 0.4; teacher momentum 0.996 -> 1; teacher temp 0.04; student temp 0.1;
center momentum 0.9; per-parameter clip 3.0; last layer frozen in epoch 0; 2 epochs.
Prints images/s (augmentation included, after a warmup) and, with --knn, the teacher's
weighted k-NN top-1 (k=20, T=0.07) after each epoch.
"""
import argparse
import functools
import gzip
import json
import math
import os
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

FMNIST = os.environ.get("DINO_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")


def idx(path):
    with gzip.open(path) if path.endswith(".gz") else open(path, "rb") as f:
        b = f.read()
    rank = b[3]
    dims = [int.from_bytes(b[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(b, np.uint8, offset=4 + 4 * rank).reshape(dims)


class Fmnist(torch.utils.data.Dataset):
    def __init__(self, split, transform):
        self.x = idx(f"{FMNIST}/{split}-images-idx3-ubyte.gz")
        self.y = idx(f"{FMNIST}/{split}-labels-idx1-ubyte.gz")
        self.transform = transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i], "L")), int(self.y[i])


class MultiCrop:
    """DINO's DataAugmentationDINO with the fmnist-small settings."""

    def __init__(self, locals_=6):
        jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.0, 0.0)], p=0.8)
        flip_jitter = T.Compose([T.RandomHorizontalFlip(0.5), jitter])
        norm = T.Compose([T.ToTensor(), T.Normalize((0.2860,), (0.3530,))])
        blur = lambda p: T.RandomApply([T.GaussianBlur(3, sigma=(0.1, 1.0))], p=p)
        rrc = lambda s, sc: T.RandomResizedCrop(s, scale=sc, interpolation=T.InterpolationMode.BICUBIC)
        self.g1 = T.Compose([rrc(28, (0.4, 1.0)), flip_jitter, blur(1.0), norm])
        self.g2 = T.Compose([rrc(28, (0.4, 1.0)), flip_jitter, blur(0.1), T.RandomSolarize(128, p=0.2), norm])
        self.local = T.Compose([rrc(12, (0.05, 0.4)), flip_jitter, blur(0.5), norm])
        self.locals = locals_

    def __call__(self, img):
        return [self.g1(img), self.g2(img)] + [self.local(img) for _ in range(self.locals)]


class DinoHead(nn.Module):
    def __init__(self, d, hidden, bottleneck, out):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.apply(self._init)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


def vit(drop_path):
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4,
                             mlp_ratio=4.0, qkv_bias=True, num_classes=0, drop_path_rate=drop_path,
                             norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU)


def features(m, img):
    """[CLS] after the final norm, position embeddings interpolated the DINO way."""
    x = m.patch_embed.proj(img).flatten(2).transpose(1, 2)
    x = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    pos, g = m.pos_embed, 7
    w0 = img.shape[-1] // 4
    if w0 != g:
        pp = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        pp = F.interpolate(pp, scale_factor=((w0 + 0.1) / g, (w0 + 0.1) / g), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:, :1], pp.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])], dim=1)
    x = x + pos
    for blk in m.blocks:
        x = blk(x)
    return m.norm(x)[:, 0]


class Net(nn.Module):
    def __init__(self, drop_path):
        super().__init__()
        self.backbone, self.head = vit(drop_path), DinoHead(128, 512, 128, 1024)

    def forward(self, crops):
        g = features(self.backbone, torch.cat(crops[:2]))
        l = features(self.backbone, torch.cat(crops[2:])) if len(crops) > 2 else g[:0]
        return self.head(torch.cat([g, l]))


def cosine(base, final, epochs, niter, warmup_epochs=0.0):
    w = int(warmup_epochs * niter)
    warm = np.linspace(0, base, w)
    it = np.arange(epochs * niter - w)
    return np.concatenate([warm, final + 0.5 * (base - final) * (1 + np.cos(np.pi * it / len(it)))])


@torch.no_grad()
def knn(teacher, threads, k=20, t=0.07):
    plain = T.Compose([T.ToTensor(), T.Normalize((0.2860,), (0.3530,))])
    feats = []
    for split in ("train", "t10k"):
        ds = Fmnist(split, plain)
        dl = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=0)
        f, y = [], []
        for x, lab in dl:
            f.append(F.normalize(features(teacher.backbone, x), dim=1))
            y.append(lab)
        feats.append((torch.cat(f), torch.cat(y)))
    (ftr, ytr), (fte, yte) = feats
    correct = 0
    for i in range(0, len(fte), 500):
        sim = fte[i:i + 500] @ ftr.T
        d, j = sim.topk(k, dim=1)
        votes = torch.zeros(len(d), 10).scatter_add_(1, ytr[j], (d / t).exp())
        correct += (votes.argmax(1) == yte[i:i + 500]).sum().item()
    return 100.0 * correct / len(fte)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (augmentation)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (throughput runs)")
    ap.add_argument("--warmup-steps", type=int, default=5, help="steps left out of the images/s figure")
    ap.add_argument("--knn", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    ds = Fmnist("train", MultiCrop())
    dl = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, drop_last=True, num_workers=a.workers,
                                     persistent_workers=a.workers > 0)
    student, teacher = Net(0.1), Net(0.0)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    reg = [p for n, p in student.named_parameters() if p.requires_grad and not (n.endswith(".bias") or p.ndim == 1)]
    noreg = [p for n, p in student.named_parameters() if p.requires_grad and (n.endswith(".bias") or p.ndim == 1)]
    opt = torch.optim.AdamW([{"params": reg}, {"params": noreg, "weight_decay": 0.0}])
    niter = len(dl)
    lr_s = cosine(5e-4 * 64 / 256, 1e-6, a.epochs, niter, 0.5)
    wd_s = cosine(0.04, 0.4, a.epochs, niter)
    mom_s = cosine(0.996, 1.0, a.epochs, niter)
    center = torch.zeros(1, 1024)
    results, times, it = {"knn_top1": {}}, [], 0
    if a.knn:
        results["knn_top1"][0] = knn(teacher, a.threads)
        print(f"random init: k-NN top-1 {results['knn_top1'][0]:.2f}%", flush=True)
    for epoch in range(a.epochs):
        t_last = time.perf_counter()
        for crops, _ in dl:
            for i, pg in enumerate(opt.param_groups):
                pg["lr"] = lr_s[it]
                if i == 0:
                    pg["weight_decay"] = wd_s[it]
            with torch.no_grad():
                t_out = teacher(crops[:2])
            s_out = student(crops)
            s_chunks = (s_out / 0.1).chunk(8)
            q = F.softmax((t_out - center) / 0.04, dim=-1).chunk(2)
            total, n = 0.0, 0
            for iq, qq in enumerate(q):
                for v in range(8):
                    if v != iq:
                        total = total + torch.sum(-qq * F.log_softmax(s_chunks[v], dim=-1), dim=-1).mean()
                        n += 1
            loss = total / n
            center = center * 0.9 + t_out.mean(0, keepdim=True) * 0.1
            opt.zero_grad()
            loss.backward()
            for p in student.parameters():
                if p.grad is not None:
                    c = 3.0 / (p.grad.norm() + 1e-6)
                    if c < 1:
                        p.grad.mul_(c)
            if epoch < 1:
                for nm, p in student.named_parameters():
                    if "last_layer" in nm:
                        p.grad = None
            opt.step()
            with torch.no_grad():
                m = mom_s[it]
                for ps, pt in zip(student.parameters(), teacher.parameters()):
                    pt.mul_(m).add_((1 - m) * ps.detach())
            now = time.perf_counter()
            times.append(now - t_last)
            t_last = now
            it += 1
            if it % 50 == 0:
                print(f"epoch {epoch + 1} it {it} loss {loss.item():.4f} "
                      f"{64 / statistics.median(times[-50:]):.1f} img/s", flush=True)
            if a.max_steps and it >= a.max_steps:
                break
        if a.max_steps and it >= a.max_steps:
            break
        if a.knn:
            results["knn_top1"][epoch + 1] = knn(teacher, a.threads)
            print(f"epoch {epoch + 1}: k-NN top-1 {results['knn_top1'][epoch + 1]:.2f}%", flush=True)
    steady = times[a.warmup_steps:] or times
    results.update({"steps": it, "threads": a.threads, "workers": a.workers,
                    "images_per_s": 64 * len(steady) / sum(steady),
                    "median_step_s": statistics.median(steady)})
    print(json.dumps(results) if a.json else results)


if __name__ == "__main__":
    main()
