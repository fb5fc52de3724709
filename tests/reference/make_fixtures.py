#!/usr/bin/env python3
"""Write the PyTorch reference fixtures the Rust tests compare against.

Needs torch and timm (pip install torch timm safetensors); never run by CI: the outputs
are small safetensors files committed under tests/fixtures/. Re-run after changing a case:

    python3 tests/reference/make_fixtures.py [--only NAME]

Every reference value is computed in float64 from float32-rounded inputs, so the fixture
holds the exact answer the Rust f32 computation approximates.
"""
import argparse
import functools
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")


def f32(t):
    return t.detach().to(torch.float32).contiguous()


def save(name, tensors, meta=None):
    path = os.path.join(OUT, name + ".safetensors")
    save_file({k: f32(v) for k, v in tensors.items()}, path, metadata=meta or {})
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(tensors)} tensors)")


def randomize_(module, gen, scale=0.2):
    """Random weights everywhere (norm weights around 1), so every gradient is non-trivial."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)
            p.copy_(p.to(torch.float32).to(torch.float64))  # representable in f32


def vit_block():
    """One pre-norm ViT block with DINO's settings (timm Block, qkv bias, LayerNorm eps
    1e-6, exact GELU): output and the gradient of every parameter and of the input for
    loss = sum(block(x) * r)."""
    from timm.models.vision_transformer import Block

    gen = torch.Generator().manual_seed(1)
    dim, heads, batch, tokens = 48, 3, 2, 9
    block = Block(dim=dim, num_heads=heads, mlp_ratio=4.0, qkv_bias=True,
                  norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU).double()
    randomize_(block, gen)
    x = f32(torch.randn(batch, tokens, dim, generator=gen)).double().requires_grad_()
    r = f32(torch.randn(batch, tokens, dim, generator=gen)).double()
    y = block(x)
    (y * r).sum().backward()
    t = {"x": x, "r": r, "y": y, "grad.x": x.grad}
    for k, p in block.named_parameters():
        t["param." + k] = p
        t["grad." + k] = p.grad
    save("vit_block", t, {"dim": str(dim), "heads": str(heads), "mlp": str(4 * dim), "eps": "1e-6"})


class TinyMlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x)))


def clip_gradients(model, clip):
    """DINO's utils.clip_gradients: each parameter's gradient against its own norm."""
    for p in model.parameters():
        if p.grad is not None:
            norm = p.grad.data.norm(2)
            coef = clip / (norm + 1e-6)
            if coef < 1:
                p.grad.data.mul_(coef)


def optimizer_steps(kind):
    """Six steps of a small MLP with cross-entropy: lr and weight decay change every step
    (as schedules do), weight decay only on >1-D parameters (DINO's param groups),
    per-parameter clipping at 0.5, and fc2.weight frozen during the first two steps (DINO's
    last-layer freeze: its grad is None, so the optimizer skips it)."""
    gen = torch.Generator().manual_seed(2)
    model = TinyMlp().double()
    randomize_(model, gen, scale=0.5)
    t = {"init." + k: p.detach().clone() for k, p in model.named_parameters()}
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    if kind == "adamw":
        opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2,
                                betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-1,
                              momentum=0.9)
    lrs = [1e-2, 2e-2, 1.5e-2, 1e-2, 5e-3, 2e-3] if kind == "adamw" else [0.1, 0.2, 0.15, 0.1, 0.05, 0.02]
    wds = [0.04, 0.1, 0.2, 0.3, 0.35, 0.4] if kind == "adamw" else [1e-3, 1e-3, 2e-3, 2e-3, 3e-3, 3e-3]
    for step, (lr, wd) in enumerate(zip(lrs, wds)):
        x = f32(torch.randn(4, 5, generator=gen)).double()
        y = torch.randint(0, 3, (4,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        clip_gradients(model, 0.5)
        if step < 2:
            model.fc2.weight.grad = None
        opt.param_groups[0]["lr"] = lr
        opt.param_groups[0]["weight_decay"] = wd
        opt.param_groups[1]["lr"] = lr
        opt.step()
        t[f"step{step}.x"] = x
        t[f"step{step}.y"] = nn.functional.one_hot(y, 3).double()
        t[f"step{step}.loss"] = loss.reshape(1)
        t[f"step{step}.lr"] = torch.tensor([lr])
        t[f"step{step}.wd"] = torch.tensor([wd])
        for k, p in model.named_parameters():
            t[f"step{step}.{k}"] = p.detach().clone()
    save(f"{kind}_steps", t, {"steps": str(len(lrs)), "clip": "0.5", "frozen": "fc2.weight:2"})


def pos_resample():
    """DINO's interpolate_pos_encoding as a matrix: F.interpolate of each basis vector of a
    g0 x g0 grid, bicubic, scale_factor (g + 0.1) / g0, align_corners False."""
    t = {}
    for g0, g in [(7, 3), (14, 6), (4, 4), (2, 3)]:
        n = g0 * g0
        basis = torch.eye(n, dtype=torch.float64).reshape(n, g0, g0).unsqueeze(1)  # (n, 1, g0, g0)
        s = (g + 0.1) / g0
        out = nn.functional.interpolate(basis, scale_factor=(s, s), mode="bicubic", align_corners=False)
        assert out.shape[-2:] == (g, g)
        t[f"m_{g0}_{g}"] = out.reshape(n, g * g).t()  # (g*g, g0*g0)
    save("pos_resample", t)


CASES = {
    "pos_resample": pos_resample,
    "vit_block": vit_block,
    "adamw_steps": lambda: optimizer_steps("adamw"),
    "sgd_steps": lambda: optimizer_steps("sgd"),
}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(CASES), help="write one fixture")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    torch.set_default_dtype(torch.float64)
    for name, fn in CASES.items():
        if args.only in (None, name):
            fn()
