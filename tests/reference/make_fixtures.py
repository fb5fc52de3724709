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


def clip_grad_norm_per_module(modules, clip):
    """DINOv2's clipping (train.py): `clip_grad_norm_` on each student module apart, each
    module's gradients against their joint norm."""
    for m in modules:
        torch.nn.utils.clip_grad_norm_(m.parameters(), clip)


def optimizer_steps(kind, dinov2=False):
    """Six steps of a small MLP with cross-entropy: lr and weight decay change every step
    (as schedules do), weight decay only on >1-D parameters (DINO's param groups),
    per-parameter clipping at 0.5, and fc2.weight frozen during the first two steps (DINO's
    last-layer freeze: its grad is None, so the optimizer skips it).

    With `dinov2`, DINOv2's optimizer path instead: each module (fc1, fc2) clipped at 0.5 as
    a whole, constant lr multipliers per parameter (as its layer-wise decay gives), and
    fc2.weight frozen by an lr of 0 (its optimizer state and step count move on)."""
    gen = torch.Generator().manual_seed(2 + 10 * int(dinov2))
    model = TinyMlp().double()
    randomize_(model, gen, scale=0.5)
    t = {"init." + k: p.detach().clone() for k, p in model.named_parameters()}
    mult = {"fc1.weight": 0.3, "fc1.bias": 0.3, "fc2.weight": 1.0, "fc2.bias": 0.5} if dinov2 else {}
    groups = [{"params": [p], "name": n, "weight_decay": 0.0 if p.ndim <= 1 else 1.0}
              for n, p in model.named_parameters()]
    if kind == "adamw":
        opt = torch.optim.AdamW(groups, lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD(groups, lr=1e-1, momentum=0.9)
    decays = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    lrs = [1e-2, 2e-2, 1.5e-2, 1e-2, 5e-3, 2e-3] if kind == "adamw" else [0.1, 0.2, 0.15, 0.1, 0.05, 0.02]
    wds = [0.04, 0.1, 0.2, 0.3, 0.35, 0.4] if kind == "adamw" else [1e-3, 1e-3, 2e-3, 2e-3, 3e-3, 3e-3]
    for step, (lr, wd) in enumerate(zip(lrs, wds)):
        x = f32(torch.randn(4, 5, generator=gen)).double()
        y = torch.randint(0, 3, (4,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if dinov2:
            clip_grad_norm_per_module([model.fc1, model.fc2], 0.5)
        else:
            clip_gradients(model, 0.5)
        if step < 2 and not dinov2:
            model.fc2.weight.grad = None
        for g in opt.param_groups:
            frozen = dinov2 and step < 2 and g["name"] == "fc2.weight"
            g["lr"] = 0.0 if frozen else lr * mult.get(g["name"], 1.0)
            g["weight_decay"] = wd * decays[g["name"]]
        opt.step()
        t[f"step{step}.x"] = x
        t[f"step{step}.y"] = nn.functional.one_hot(y, 3).double()
        t[f"step{step}.loss"] = loss.reshape(1)
        t[f"step{step}.lr"] = torch.tensor([lr])
        t[f"step{step}.wd"] = torch.tensor([wd])
        for k, p in model.named_parameters():
            t[f"step{step}.{k}"] = p.detach().clone()
    meta = {"steps": str(len(lrs)), "clip": "0.5", "frozen": "fc2.weight:2"}
    if dinov2:
        meta.update({"clip_per": "module", "freeze": "zero_lr", "lr_mult": ",".join(f"{k}:{v}" for k, v in mult.items())})
    save(f"{kind}_steps{'_dinov2' if dinov2 else ''}", t, meta)


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


def pos_resample_aa():
    """DINOv2's interpolation for its models with registers as a matrix: F.interpolate of each
    basis vector of a g0 x g0 grid to size (g, g), bicubic, antialias True, align_corners
    False (interpolate_offset 0). Small grids whole (`m_`); DINOv2's 37x37 grid to 224 px's
    16x16 and back along one axis (`a_`: a (1, g0) grid to (1, g); PyTorch 2.15 resamples a
    (g0, 1) grid's first axis wrongly, every output row alike)."""
    t = {}
    for g0, g in [(7, 3), (4, 6), (4, 2)]:
        n = g0 * g0
        basis = torch.eye(n, dtype=torch.float64).reshape(n, g0, g0).unsqueeze(1)
        out = nn.functional.interpolate(basis, size=(g, g), mode="bicubic", antialias=True, align_corners=False)
        t[f"m_{g0}_{g}"] = out.reshape(n, g * g).t()
    for g0, g in [(37, 16), (16, 37)]:
        basis = torch.eye(g0, dtype=torch.float64).reshape(g0, 1, 1, g0)
        out = nn.functional.interpolate(basis, size=(1, g), mode="bicubic", antialias=True, align_corners=False)
        t[f"a_{g0}_{g}"] = out.reshape(g0, g).t()
    save("pos_resample_aa", t)


# ---- deterministic weights, reproduced bit for bit by tests/common/splitmix.rs -------------
MASK = (1 << 64) - 1


def splitmix_uniform(seed, offset, n):
    """n values uniform in [-1, 1) with 24 random bits each: element k is
    mix(seed + (offset + k + 1) * golden), splitmix64's finalizer."""
    import numpy as np
    k = np.arange(offset + 1, offset + n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 23) - 1.0


def param_scale(name):
    """(offset, scale) of the splitmix weights of a parameter, by name."""
    if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "norm.weight":
        return 1.0, 0.1
    if name.endswith(".bias"):
        return 0.0, 0.02
    if name.endswith(".gamma"):  # LayerScale: well away from both 0 and 1
        return 0.5, 0.4
    return 0.0, 0.05


def splitmix_params(model, seed):
    """Fill every parameter, in state_dict order, from one splitmix stream."""
    offset = 0
    with torch.no_grad():
        for name, p in model.state_dict().items():
            base, scale = param_scale(name)
            v = (base + scale * splitmix_uniform(seed, offset, p.numel())).astype("float32").astype("float64")
            p.copy_(torch.from_numpy(v).reshape(p.shape))
            offset += p.numel()


def dino_pos_embed(model, h, w):
    """DINO's interpolate_pos_encoding (bicubic, scale (w0 + 0.1) / sqrt(N), no antialias)."""
    pos = model.pos_embed
    n = pos.shape[1] - 1
    p = model.patch_embed.patch_size[0]
    w0, h0 = w // p, h // p
    if w0 * h0 == n and w0 == h0:
        return pos
    g = int(n ** 0.5)
    patch_pos = pos[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patch_pos = nn.functional.interpolate(patch_pos, scale_factor=((w0 + 0.1) / g, (h0 + 0.1) / g),
                                          mode="bicubic", align_corners=False)
    assert patch_pos.shape[-2:] == (w0, h0)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])
    return torch.cat([pos[:, :1], patch_pos], dim=1)


def vit_cls_and_attention(model, img):
    """[CLS] after the final norm and the last block's attention, DINO's way at any size."""
    x = model.patch_embed.proj(img).flatten(2).transpose(1, 2)
    x = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = x + dino_pos_embed(model, img.shape[2], img.shape[3])
    for blk in model.blocks[:-1]:
        x = blk(x)
    last = model.blocks[-1]
    h = last.norm1(x)
    b, n, c = h.shape
    heads = last.attn.num_heads
    qkv = last.attn.qkv(h).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = ((q * last.attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    x = last(x)
    return model.norm(x)[:, 0], attn


def timm_vit(name, dim, heads, depth, seed, init_values=None, patch=16, native=224, small=96):
    """A shallow timm ViT with DINO's settings and splitmix weights: [CLS] output and the
    last block's attention at the native size and at a smaller crop (position embeddings
    interpolated DINO's way, which is also DINOv2's for its models without registers: offset
    0.1, no antialiasing). `init_values`: LayerScale on every residual branch (its `gamma`s
    are splitmix weights too). Attention is stored whole only for the small crop of patch 16
    (37 tokens); otherwise its [CLS] rows (size)."""
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=native, patch_size=patch, embed_dim=dim, depth=depth, num_heads=heads,
                              mlp_ratio=4.0, qkv_bias=True, num_classes=0, init_values=init_values,
                              norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU).double()
    splitmix_params(model, seed)
    t = {}
    for size, batch in [(native, 2), (small, 2)]:
        img = torch.from_numpy(splitmix_uniform(seed + size, 0, batch * 3 * size * size)).reshape(batch, 3, size, size)
        with torch.no_grad():
            cls, attn = vit_cls_and_attention(model, img)
            assert torch.allclose(cls, model(img), atol=1e-10) if size == native else True
        t[f"cls_{size}"] = cls
        whole = size == small and patch == 16
        t[f"attn_{size}"] = attn if whole else attn[:, :, 0, :]
    keys = ",".join(f"{k}:{v.numel()}" for k, v in model.state_dict().items())
    save(name, t, {"seed": str(seed), "depth": str(depth), "dim": str(dim), "heads": str(heads), "keys": keys})


def timm_vit_reg4():
    """DINOv2's ViT with 4 registers and LayerScale in timm's form (`reg_tokens=4`,
    `no_embed_class=True`: [CLS]'s position folded into `cls_token`, `reg_token`), small: 56 px,
    patch 14 (4x4 grid), width 48, 3 heads, 2 blocks, splitmix weights. Saved: the weights as
    timm names them (float32 safetensors), and at 56 px and an 84 px crop (position
    embeddings of the patches interpolated DINO's way, offset 0.1, no antialiasing) the
    [CLS] output, every token after the final norm and the last block's [CLS] attention row
    over all tokens ([CLS], registers, patches). `_aa`: at 84 px and a 28 px crop with the
    interpolation of DINOv2's register models instead (antialiased bicubic to the grid size,
    offset 0)."""
    from safetensors.torch import save_file as save_st
    from timm.models.vision_transformer import VisionTransformer
    seed, reg = 20, 4
    model = VisionTransformer(img_size=56, patch_size=14, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0,
                              qkv_bias=True, num_classes=0, init_values=1e-5, reg_tokens=reg, no_embed_class=True,
                              norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU).double()
    splitmix_params(model, seed)
    t = {}
    for size, aa in [(56, False), (84, False), (84, True), (28, True)]:
        img = torch.from_numpy(splitmix_uniform(seed + size, 0, 2 * 3 * size * size)).reshape(2, 3, size, size)
        with torch.no_grad():
            x = model.patch_embed.proj(img).flatten(2).transpose(1, 2)
            g0, g = 4, size // 14
            pos = model.pos_embed
            if g != g0:
                p = pos.reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
                if aa:
                    p = nn.functional.interpolate(p, size=(g, g), mode="bicubic", antialias=True, align_corners=False)
                else:
                    p = nn.functional.interpolate(p, scale_factor=((g + 0.1) / g0, (g + 0.1) / g0), mode="bicubic",
                                                  align_corners=False)
                pos = p.permute(0, 2, 3, 1).reshape(1, g * g, -1)
            x = x + pos
            b = x.shape[0]
            x = torch.cat([model.cls_token.expand(b, -1, -1), model.reg_token.expand(b, -1, -1), x], dim=1)
            for blk in model.blocks[:-1]:
                x = blk(x)
            last = model.blocks[-1]
            h = last.norm1(x)
            n, c = h.shape[1], h.shape[2]
            qkv = last.attn.qkv(h).reshape(b, n, 3, 3, c // 3).permute(2, 0, 3, 1, 4)
            attn = ((qkv[0] * last.attn.scale) @ qkv[1].transpose(-2, -1)).softmax(dim=-1)
            tokens = model.norm(last(x))
            if size == 56:
                assert torch.allclose(tokens, model.forward_features(img), atol=1e-10)
        sfx = "_aa" if aa else ""
        t[f"cls_{size}{sfx}"] = tokens[:, 0]
        t[f"tokens_{size}{sfx}"] = tokens
        t[f"attn_{size}{sfx}"] = attn[:, :, 0, :]
    keys = ",".join(f"{k}:{v.numel()}" for k, v in model.state_dict().items())
    save("timm_vit_reg4", t, {"seed": str(seed), "registers": str(reg), "keys": keys})
    st = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    path = os.path.join(OUT, "weights", "timm_reg4.safetensors")
    save_st(st, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def timm_vit_swiglu():
    """DINOv2's SwiGLU ViT (its ViT-g/14 form: `SwiGLUPacked`, SiLU, LayerScale) small: 56 px,
    patch 14, width 48, 3 heads, 2 blocks, splitmix weights, 4 registers. The packed width is
    DINOv2's for `mlp_ratio` 4: hidden (int(192 * 2 / 3) + 7) // 8 * 8 = 128, `fc1` 256 wide,
    so timm's `mlp_ratio` is 256 / 48. Saved: the weights as timm names them (`fc1`/`fc2`:
    DINOv2's `w12`/`w3`), and at 56 px and an 84 px crop the [CLS] output, every token after
    the final norm and the last block's [CLS] attention row."""
    from safetensors.torch import save_file as save_st
    from timm.layers import SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer
    seed, reg, dim = 21, 4, 48
    hidden = (int(4 * dim * 2 / 3) + 7) // 8 * 8
    ratio = 2 * hidden / dim
    assert int(dim * ratio) == 2 * hidden
    model = VisionTransformer(img_size=56, patch_size=14, embed_dim=dim, depth=2, num_heads=3, mlp_ratio=ratio,
                              qkv_bias=True, num_classes=0, init_values=1e-5, reg_tokens=reg, no_embed_class=True,
                              mlp_layer=SwiGLUPacked, act_layer=nn.SiLU,
                              norm_layer=functools.partial(nn.LayerNorm, eps=1e-6)).double()
    assert model.blocks[0].mlp.fc1.weight.shape == (2 * hidden, dim)
    assert model.blocks[0].mlp.fc2.weight.shape == (dim, hidden)
    splitmix_params(model, seed)
    t = {}
    for size in (56, 84):
        img = torch.from_numpy(splitmix_uniform(seed + size, 0, 2 * 3 * size * size)).reshape(2, 3, size, size)
        with torch.no_grad():
            x = model.patch_embed.proj(img).flatten(2).transpose(1, 2)
            g0, g = 4, size // 14
            pos = model.pos_embed
            if g != g0:
                p = pos.reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
                p = nn.functional.interpolate(p, scale_factor=((g + 0.1) / g0, (g + 0.1) / g0), mode="bicubic",
                                              align_corners=False)
                pos = p.permute(0, 2, 3, 1).reshape(1, g * g, -1)
            x = x + pos
            b = x.shape[0]
            x = torch.cat([model.cls_token.expand(b, -1, -1), model.reg_token.expand(b, -1, -1), x], dim=1)
            for blk in model.blocks[:-1]:
                x = blk(x)
            last = model.blocks[-1]
            h = last.norm1(x)
            n, c = h.shape[1], h.shape[2]
            qkv = last.attn.qkv(h).reshape(b, n, 3, 3, c // 3).permute(2, 0, 3, 1, 4)
            attn = ((qkv[0] * last.attn.scale) @ qkv[1].transpose(-2, -1)).softmax(dim=-1)
            tokens = model.norm(last(x))
            if size == 56:
                assert torch.allclose(tokens, model.forward_features(img), atol=1e-10)
        t[f"cls_{size}"] = tokens[:, 0]
        t[f"tokens_{size}"] = tokens
        t[f"attn_{size}"] = attn[:, :, 0, :]
    n_params = sum(p.numel() for p in model.parameters())
    keys = ",".join(f"{k}:{v.numel()}" for k, v in model.state_dict().items())
    save("timm_vit_swiglu", t, {"seed": str(seed), "registers": str(reg), "params": str(n_params), "keys": keys})
    st = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    path = os.path.join(OUT, "weights", "timm_swiglu.safetensors")
    save_st(st, path)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


def koleo():
    """DINOv2's KoLeoLoss (dinov2/loss/koleo_loss.py, written out here from its definition) on
    8 random 16-dim rows, row 5 a near-copy of row 2: the loss and its gradient, float64."""
    gen = torch.Generator().manual_seed(22)
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64)
    x[5] = x[2] + 0.05 * torch.randn(16, generator=gen, dtype=torch.float64)
    x.requires_grad_(True)
    eps = 1e-8
    xn = nn.functional.normalize(x, eps=eps, p=2, dim=-1)
    dots = xn @ xn.t()
    n = xn.shape[0]
    dots = dots.detach().clone()
    dots.view(-1)[:: n + 1].fill_(-1)
    nearest = dots.max(dim=1).indices
    d = nn.PairwiseDistance(2, eps=eps)(xn, xn[nearest])
    loss = -torch.log(d + eps).mean()
    loss.backward()
    save("koleo", {"x": x.detach(), "loss": loss.detach().reshape(1), "grad": x.grad})


def sinkhorn_knopp(teacher_output, teacher_temp, n_iterations, n_rows=None):
    """sinkhorn_knopp_teacher of DINOv2's DINOLoss / iBOTPatchLoss on one process, written out
    from its definition (B = n_rows, the rows given by default)."""
    q = torch.exp(teacher_output / teacher_temp).t()
    b, k = n_rows or q.shape[1], q.shape[0]
    q /= torch.sum(q)
    for _ in range(n_iterations):
        q /= torch.sum(q, dim=1, keepdim=True)
        q /= k
        q /= torch.sum(q, dim=0, keepdim=True)
        q /= b
    q *= b
    return q.t()


def sinkhorn():
    """DINOv2's sinkhorn_knopp_teacher (dinov2/loss/dino_clstoken_loss.py, written out here from
    its definition, one process) on 12 teacher rows of 32 prototypes at temperature 0.07, for 1
    and 3 iterations, float64 from float32 inputs."""
    gen = torch.Generator().manual_seed(23)
    t = (0.5 * torch.randn(12, 32, generator=gen)).float().double()  # head outputs: cosines, about [-1, 1]

    sk = sinkhorn_knopp
    save("sinkhorn", {"teacher": t, "q1": sk(t, 0.07, 1), "q3": sk(t, 0.07, 3)})


def pil_ops():
    """PIL/torchvision pixel operations of DINO's augmentation on two small images (RGB and
    L), each output as HWC floats holding the 8-bit values."""
    import numpy as np
    from PIL import Image, ImageFilter, ImageOps
    import torchvision.transforms.functional as F
    from torchvision.transforms import GaussianBlur

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:13, 0:17]
    base = np.stack([xx * 15, yy * 19, (xx * yy) % 255], -1) + rng.integers(0, 60, (13, 17, 3))
    rgb = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    gray = Image.fromarray(rng.integers(0, 256, (28, 28)).astype(np.uint8), "L")
    out = {"rgb": rgb, "gray": gray}
    for name, img in (("rgb", rgb), ("gray", gray)):
        w, h = img.size
        out[f"{name}.resize_down"] = img.resize((w // 2 + 1, h // 2), Image.BICUBIC)
        out[f"{name}.resize_up"] = img.resize((w * 2 - 3, h + 7), Image.BICUBIC)
        out[f"{name}.resize_h_only"] = img.resize((w, 5), Image.BICUBIC)
        out[f"{name}.resized_crop"] = F.resized_crop(img, 2, 3, 9, 11, [12, 12], F.InterpolationMode.BICUBIC)
        out[f"{name}.hflip"] = F.hflip(img)
        for f in (0.65, 1.3):
            out[f"{name}.brightness_{f}"] = F.adjust_brightness(img, f)
            out[f"{name}.contrast_{f}"] = F.adjust_contrast(img, f)
            out[f"{name}.saturation_{f}"] = F.adjust_saturation(img, f)
        for f in (-0.1, 0.07):
            out[f"{name}.hue_{f}"] = F.adjust_hue(img, f)
        out[f"{name}.grayscale"] = F.rgb_to_grayscale(img, num_output_channels=len(img.getbands()))
        out[f"{name}.solarize"] = ImageOps.solarize(img, 128)
        for r in (0.1, 0.7, 1.5, 2.0):
            out[f"{name}.blur_pil_{r}"] = img.filter(ImageFilter.GaussianBlur(radius=r))
        for sg in (0.1, 0.5, 1.0):
            out[f"{name}.blur_k3_{sg}"] = GaussianBlur(3, sigma=(sg, sg))(img)
    tensors = {}
    for k, im in out.items():
        a = np.asarray(im)
        if a.ndim == 2:
            a = a[:, :, None]
        tensors[k] = torch.from_numpy(a.astype(np.float32))
    save("pil_ops", tensors)


class DinoHeadRef(nn.Module):
    """DINO's projection head: MLP (GELU) to a bottleneck, L2 normalization, weight-normed
    linear layer without bias (weight_g fixed at 1 when norm_last_layer)."""

    def __init__(self, dim, out, hidden, bottleneck, norm_last_layer):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x):
        return self.last_layer(nn.functional.normalize(self.mlp(x), dim=-1, p=2))


class FedDropPath(nn.Module):
    """DropPath whose per-sample mask (0 or 1/keep) is given, so Rust can feed the same one."""

    def __init__(self):
        super().__init__()
        self.mask = None

    def forward(self, x):
        return x if self.mask is None else x * self.mask[:, None, None]


class DinoNet(nn.Module):
    """backbone + head, with state_dict keys as DINO's MultiCropWrapper (less `module.`)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def features(self, img, masks=None):
        m = self.backbone
        for i, blk in enumerate(m.blocks):
            if isinstance(blk.drop_path1, FedDropPath):
                blk.drop_path1.mask = None if masks is None else masks[i][0]
                blk.drop_path2.mask = None if masks is None else masks[i][1]
        x = m.patch_embed.proj(img).flatten(2).transpose(1, 2)
        x = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + dino_pos_embed(m, img.shape[2], img.shape[3])
        for blk in m.blocks:
            x = blk(x)
        return m.norm(x)[:, 0]


def dino_steps(name, norm_last_layer):
    """Two consecutive DINO training steps (main_dino.py's train_one_epoch) on a tiny model:
    ViT 8x8x1, patch 4, dim 8, depth 2, heads 2, mlp 16, drop path (0, 0.2) on the student;
    head 16/8/12; 2 global 8 px + 2 local 4 px crops of 3 images. Step 1 is in epoch 0 (last
    layer frozen), step 2 in epoch 1; lr, wd, teacher momentum and temperature differ per
    step; per-parameter clipping at 0.05 bites on most tensors."""
    from timm.models.vision_transformer import VisionTransformer
    gen = torch.Generator().manual_seed(11 + int(norm_last_layer))
    B, L, K = 3, 2, 12

    def vit():
        return VisionTransformer(img_size=8, patch_size=4, in_chans=1, embed_dim=8, depth=2, num_heads=2,
                                 mlp_ratio=2.0, qkv_bias=True, num_classes=0,
                                 norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU)

    student = DinoNet(vit(), DinoHeadRef(8, K, 16, 8, norm_last_layer)).double()
    for blk in student.backbone.blocks:
        blk.drop_path1, blk.drop_path2 = FedDropPath(), FedDropPath()
    with torch.no_grad():
        for k, p in student.named_parameters():
            if k.endswith("weight_g"):
                p.copy_(1.0 + 0.3 * torch.rand(p.shape, generator=gen, dtype=torch.float64) * (not norm_last_layer))
            else:
                p.copy_(f32(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3).double())
    teacher = DinoNet(vit(), DinoHeadRef(8, K, 16, 8, norm_last_layer)).double()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    t = {"init." + k: v.detach().clone() for k, v in student.state_dict().items()}

    regularized = [p for n, p in student.named_parameters() if p.requires_grad and not (n.endswith(".bias") or p.ndim == 1)]
    plain = [p for n, p in student.named_parameters() if p.requires_grad and (n.endswith(".bias") or p.ndim == 1)]
    opt = torch.optim.AdamW([{"params": regularized}, {"params": plain, "weight_decay": 0.0}])
    center = torch.zeros(1, K, dtype=torch.float64)
    student_temp, center_momentum, clip = 0.1, 0.9, 0.05
    keep = 1.0 - 0.2
    hyper = [  # lr, wd, momentum, teacher temp, epoch
        (2e-3, 0.04, 0.9, 0.04, 0),
        (1e-3, 0.2, 0.95, 0.06, 1),
    ]
    for step, (lr, wd, mom, ttemp, epoch) in enumerate(hyper):
        g = f32(torch.randn(2 * B, 1, 8, 8, generator=gen)).double()
        l = f32(torch.randn(L * B, 1, 4, 4, generator=gen)).double()
        masks = {}
        for which, rows in (("global", 2 * B), ("local", L * B)):
            mk = lambda: (torch.rand(rows, generator=gen) >= 0.2).double() / keep
            masks[which] = [(None, None), (mk(), mk())]
            for j, br in enumerate(("attn", "mlp")):
                t[f"step{step}.drop_path.{which}.1.{br}"] = masks[which][1][j]
        for i, pg in enumerate(opt.param_groups):
            pg["lr"] = lr
            if i == 0:
                pg["weight_decay"] = wd
        with torch.no_grad():
            t_out = teacher.head(teacher.features(g))
        s_out = student.head(torch.cat([student.features(g, masks["global"]), student.features(l, masks["local"])]))
        # DINOLoss.forward
        s_chunks = (s_out / student_temp).chunk(2 + L)
        q_chunks = nn.functional.softmax((t_out - center) / ttemp, dim=-1).detach().chunk(2)
        total, terms = 0.0, 0
        for iq, q in enumerate(q_chunks):
            for v in range(len(s_chunks)):
                if v == iq:
                    continue
                total = total + torch.sum(-q * nn.functional.log_softmax(s_chunks[v], dim=-1), dim=-1).mean()
                terms += 1
        loss = total / terms
        new_center = center * center_momentum + t_out.sum(0, keepdim=True) / len(t_out) * (1 - center_momentum)
        q_all = nn.functional.softmax((t_out - center) / ttemp, dim=-1)
        entropy = -(q_all * torch.log(q_all)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in student.parameters() if p.grad is not None))
        clip_gradients(student, clip)
        if epoch < 1:  # cancel_gradients_last_layer, freeze_last_layer = 1
            for n, p in student.named_parameters():
                if "last_layer" in n:
                    p.grad = None
        opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(mom).add_((1 - mom) * ps.detach())
        center = new_center
        t[f"step{step}.global_crops"] = g
        t[f"step{step}.local_crops"] = l
        t[f"step{step}.hyper"] = torch.tensor([lr, wd, mom, ttemp, float(epoch < 1)])
        t[f"step{step}.loss"] = loss.reshape(1)
        t[f"step{step}.grad_norm"] = grad_norm.reshape(1)
        t[f"step{step}.teacher_entropy"] = entropy.reshape(1)
        t[f"step{step}.center"] = center.reshape(-1)
        for k, v in student.state_dict().items():
            t[f"step{step}.student.{k}"] = v.detach().clone()
        for k, v in teacher.state_dict().items():
            t[f"step{step}.teacher.{k}"] = v.detach().clone()
    save(name, t, {"batch": str(B), "clip": str(clip), "norm_last_layer": str(norm_last_layer)})


def weight_formats():
    """One small ViT (32 px, patch 8, dim 48, depth 2, heads 3) with random weights, saved in
    every format the loaders read, with timm's [CLS] output for a fixed image batch:
    timm-named safetensors, a backbone-only .pth state dict (float16 storage, as the released
    files are not, to exercise the conversion), a DINO full checkpoint .pth (student with
    `module.backbone.`, teacher with `backbone.`, optimizer state, an argparse Namespace),
    and a Hugging Face ViTModel directory (model.safetensors + config.json)."""
    import argparse
    import shutil
    from safetensors.torch import save_file as save_st
    from timm.models.vision_transformer import VisionTransformer
    from transformers import ViTConfig, ViTModel
    torch.set_default_dtype(torch.float32)  # the released files are float32
    out = os.path.join(OUT, "weights")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    gen = torch.Generator().manual_seed(21)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0,
                              qkv_bias=True, num_classes=0, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
                              act_layer=nn.GELU)
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim > 1 else 0.1) + (1.0 if "norm" in k and k.endswith("weight") else 0.0))
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_st(sd, os.path.join(out, "timm.safetensors"))
    # the released .pth files are float32; one in float16 exercises the conversion, so the
    # reference output is computed from the float16-rounded weights for that file
    torch.save({k: v.half() for k, v in sd.items()}, os.path.join(out, "backbone_fp16.pth"))
    ckpt = {
        "student": {"module.backbone." + k: v for k, v in sd.items()} | {"module.head.last_layer.weight_g": torch.ones(7, 1)},
        "teacher": {"backbone." + k: v for k, v in sd.items()} | {"head.mlp.0.weight": torch.zeros(5, 48)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": 3,
        "args": argparse.Namespace(arch="vit_tiny", patch_size=8, lr=0.0005),
        "dino_loss": {"center": torch.zeros(1, 7)},
    }
    torch.save(ckpt, os.path.join(out, "full_checkpoint.pth"))
    cfg = ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=192, image_size=32,
                    patch_size=8, num_channels=3, qkv_bias=True, layer_norm_eps=1e-12, hidden_act="gelu")
    hf = ViTModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for k, p in hf.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.3 if p.ndim > 1 else 0.1) + (1.0 if "layernorm" in k and k.endswith("weight") else 0.0))
    hf.save_pretrained(os.path.join(out, "hf"), safe_serialization=True)
    img = torch.randn(2, 3, 32, 32, generator=gen)
    torch.set_default_dtype(torch.float64)  # references in float64 from the float32 weights
    with torch.no_grad():
        model, hf = model.double(), hf.double()
        t = {"image": img, "timm_cls": model(img.double()), "hf_cls": hf(pixel_values=img.double()).last_hidden_state[:, 0]}
        half = VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0,
                                 qkv_bias=True, num_classes=0,
                                 norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU)
        half.load_state_dict({k: v.half().double() for k, v in sd.items()})
        t["fp16_cls"] = half(img.double())
    save("weights/outputs", t)
    for f in sorted(os.listdir(out)):
        print("  ", f)


CASES = {
    "timm_vit_s16": lambda: timm_vit("timm_vit_s16", 384, 6, 2, 16),
    "timm_vit_ti16": lambda: timm_vit("timm_vit_ti16", 192, 3, 2, 17),
    "timm_vit_ti16_ls": lambda: timm_vit("timm_vit_ti16_ls", 192, 3, 2, 18, init_values=1e-5),
    "timm_vit_s14_ls": lambda: timm_vit("timm_vit_s14_ls", 384, 6, 2, 19, init_values=1e-5, patch=14, native=518,
                                        small=224),
    "pos_resample": pos_resample,
    "pos_resample_aa": pos_resample_aa,
    "koleo": koleo,
    "sinkhorn": sinkhorn,
    "vit_block": vit_block,
    "pil_ops": pil_ops,
    "weight_formats": weight_formats,
    "dino_steps": lambda: dino_steps("dino_steps", False),
    "dino_steps_nll": lambda: dino_steps("dino_steps_nll", True),
    "adamw_steps": lambda: optimizer_steps("adamw"),
    "sgd_steps": lambda: optimizer_steps("sgd"),
    "adamw_steps_dinov2": lambda: optimizer_steps("adamw", True),
    "sgd_steps_dinov2": lambda: optimizer_steps("sgd", True),
    "timm_vit_reg4": timm_vit_reg4,  # after weight_formats, which empties weights/
    "timm_vit_swiglu": timm_vit_swiglu,
    "dinov2_steps_sk": lambda: __import__("dinov2_steps").dinov2_steps("dinov2_steps_sk", True, False),
    "dinov2_steps_ema": lambda: __import__("dinov2_steps").dinov2_steps("dinov2_steps_ema", False, True),
    "dinov2_steps_optim": lambda: __import__("dinov2_steps").dinov2_steps("dinov2_steps_optim", True, True, True),
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
