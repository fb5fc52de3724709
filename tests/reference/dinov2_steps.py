"""The DINOv2-style step fixtures (make_fixtures.py --only dinov2_steps_sk / dinov2_steps_ema).

Two consecutive training steps of DINOv2's objective on a tiny model, written out from the
official definitions (dinov2/train/ssl_meta_arch.py `forward_backward`, dinov2/loss/
dino_clstoken_loss.py, ibot_patch_loss.py, koleo_loss.py): the teacher's [CLS] targets and
its masked patch targets (Sinkhorn-Knopp or the EMA centers), the student on masked global
crops and unmasked local crops, the DINO loss over its (n_global - 1) * n_global + 2 * n_local
terms, KoLeo on each global view, the iBOT loss on the gathered masked patches with DINOv2's
masks_weight; then the optimizer path the Rust trainer takes (DINO's per-parameter clipping,
AdamW with DINO's weight-decay groups, last layers frozen in epoch 0, the EMA teacher).

With `v2_optim` (fixture dinov2_steps_optim) the optimizer path is DINOv2's instead
(dinov2/utils/param_groups.py, dinov2/train/train.py): per-parameter lr multipliers from the
layer-wise decay (0.9) and the patch-embedding multiplier (0.2), weight decay off for biases,
norms and LayerScale gammas, each student module's gradients clipped as a whole, the last
layers frozen by an lr of 0 in epoch 0, and a trained weight_g (DINOv2's head).
"""
import functools

import torch
import torch.nn as nn

from make_fixtures import DinoHeadRef, clip_gradients, dino_pos_embed, f32, save, sinkhorn_knopp


class Net(nn.Module):
    def __init__(self, backbone, head, ibot_head):
        super().__init__()
        self.backbone, self.head = backbone, head
        if ibot_head is not None:
            self.ibot_head = ibot_head
        self.backbone.mask_token = nn.Parameter(torch.zeros(1, backbone.embed_dim))

    def features(self, img, masks=None):
        """DINOv2's prepare_tokens_with_masks + forward_features: normalized [CLS], patches."""
        m = self.backbone
        x = m.patch_embed.proj(img).flatten(2).transpose(1, 2)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), m.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat([m.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + dino_pos_embed(m, img.shape[2], img.shape[3])
        for blk in m.blocks:
            x = blk(x)
        x = m.norm(x)
        return x[:, 0], x[:, 1:]


def sinkhorn(teacher_output, teacher_temp, n_rows, n_iterations=3):
    return sinkhorn_knopp(teacher_output, teacher_temp, n_iterations, n_rows)


def koleo(x, eps=1e-8):
    xn = nn.functional.normalize(x, eps=eps, p=2, dim=-1)
    dots = (xn @ xn.t()).detach().clone()
    dots.view(-1)[:: xn.shape[0] + 1].fill_(-1)
    nearest = dots.max(dim=1).indices
    return -torch.log(nn.PairwiseDistance(2, eps=eps)(xn, xn[nearest]) + eps).mean()


def layer_decay_rate(name, decay, n_blocks):
    """DINOv2's lr multiplier of a parameter of one student module (`name` relative to it;
    `n_blocks` 0 for a head): the embeddings at layer 0, block i at layer i + 1, the rest
    at the top."""
    layer = n_blocks + 1
    if n_blocks > 0:
        if any(k in name for k in ("pos_embed", "patch_embed", "mask_token", "cls_token")):
            layer = 0
        elif name.startswith("blocks."):
            layer = int(name.split(".")[1]) + 1
    return decay ** (n_blocks + 1 - layer)


def dinov2_param_groups(modules, decay, patch_embed_mult):
    """One AdamW group per parameter with DINOv2's lr and weight-decay multipliers."""
    groups = []
    for prefix, m in modules:
        n_blocks = len(m.blocks) if hasattr(m, "blocks") else 0
        for n, p in m.named_parameters():
            if not p.requires_grad:
                continue
            lr_mult = layer_decay_rate(n, decay, n_blocks) * (patch_embed_mult if "patch_embed" in n else 1.0)
            wd_mult = 0.0 if (n.endswith(".bias") or "norm" in n or "gamma" in n) else 1.0
            groups.append({"params": [p], "name": f"{prefix}.{n}", "lr_mult": lr_mult, "wd_mult": wd_mult,
                           "last": "last_layer" in n})
    return groups


def dinov2_steps(name, sk, separate, v2_optim=False):
    from timm.models.vision_transformer import VisionTransformer
    gen = torch.Generator().manual_seed(31 + 2 * int(sk) + int(separate) + 4 * int(v2_optim))
    B, L, K, P = 3, 2, 12, 9  # 12 px global crops of 4 px patches: a 3 x 3 grid
    koleo_w, ibot_w, student_temp, center_momentum, clip = 0.1, 0.7, 0.1, 0.9, 0.05

    def vit():
        return VisionTransformer(img_size=12, patch_size=4, in_chans=1, embed_dim=8, depth=2, num_heads=2,
                                 mlp_ratio=2.0, qkv_bias=True, num_classes=0,
                                 norm_layer=functools.partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU)

    def net():
        nll = not v2_optim  # DINOv2's head trains its weight_g
        ibot_head = DinoHeadRef(8, K, 16, 8, nll) if separate else None
        return Net(vit(), DinoHeadRef(8, K, 16, 8, nll), ibot_head).double()

    student = net()
    with torch.no_grad():
        for k, p in student.named_parameters():
            if not k.endswith("weight_g"):
                p.copy_(f32(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.3).double())
    teacher = net()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    t = {"init." + k: v.detach().clone() for k, v in student.state_dict().items()}
    s_ibot_head = student.ibot_head if separate else student.head
    t_ibot_head = teacher.ibot_head if separate else teacher.head

    trained = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    regularized = [p for n, p in trained if not (n.endswith(".bias") or p.ndim == 1)]
    plain = [p for n, p in trained if n.endswith(".bias") or p.ndim == 1]
    opt = torch.optim.AdamW([{"params": regularized}, {"params": plain, "weight_decay": 0.0}])
    modules = [("backbone", student.backbone), ("head", student.head)]
    modules += [("ibot_head", student.ibot_head)] if separate else []
    if v2_optim:
        opt = torch.optim.AdamW(dinov2_param_groups(modules, 0.9, 0.2))
    center = torch.zeros(1, K, dtype=torch.float64)
    ibot_center = torch.zeros(1, 1, K, dtype=torch.float64)
    hyper = [(2e-3, 0.04, 0.9, 0.04, 0), (1e-3, 0.2, 0.95, 0.06, 1)]  # lr, wd, momentum, teacher temp, epoch
    n_terms = (2 - 1) * 2 + L * 2
    for step, (lr, wd, mom, ttemp, epoch) in enumerate(hyper):
        g = f32(torch.randn(2 * B, 1, 12, 12, generator=gen)).double()
        l = f32(torch.randn(L * B, 1, 8, 8, generator=gen)).double()
        # 3 of the 6 global crops masked, 1 to 3 patches each (within the 9 patches the Rust
        # step gathers: DINOv2's upperbound for 6 crops, probability 0.5, ratios 0.1..0.5)
        masks = torch.zeros(2 * B, P, dtype=torch.bool)
        for r in torch.randperm(2 * B, generator=gen)[:3].tolist():
            n = 1 + int(torch.randint(3, (1,), generator=gen))
            masks[r, torch.randperm(P, generator=gen)[:n]] = True
        weights = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)
        masks_weight = weights[masks]
        n_masked = int(masks.sum())
        for i, pg in enumerate(opt.param_groups):
            if v2_optim:  # train.py's apply_optim_scheduler, last_layer_lr 0 in the freeze epoch
                pg["lr"] = (0.0 if pg["last"] and epoch < 1 else lr) * pg["lr_mult"]
                pg["weight_decay"] = wd * pg["wd_mult"]
                continue
            pg["lr"] = lr
            if i == 0:
                pg["weight_decay"] = wd
        with torch.no_grad():
            t_cls, t_patches = teacher.features(g)
            t_cls_out = teacher.head(t_cls)
            t_masked_out = t_ibot_head(t_patches.flatten(0, 1)[masks.flatten()])
            if sk:
                q_cls = sinkhorn(t_cls_out, ttemp, 2 * B)
                q_patch = sinkhorn(t_masked_out, ttemp, n_masked)
            else:
                q_cls = nn.functional.softmax((t_cls_out - center) / ttemp, dim=-1)
                q_patch = nn.functional.softmax((t_masked_out.unsqueeze(0) - ibot_center) / ttemp, dim=-1)[0]
                center = center * center_momentum + t_cls_out.sum(0, keepdim=True) / len(t_cls_out) * (
                    1 - center_momentum)
                batch_center = t_masked_out.unsqueeze(0).mean(1).sum(0, keepdim=True)  # (1, K): 1 "rank"
                ibot_center = ibot_center * center_momentum + batch_center * (1 - center_momentum)
            entropy = -(q_cls * torch.log(q_cls)).sum(-1).mean()
        q1, q2 = q_cls.chunk(2)
        teacher_list = [q2, q1]  # swapped: view 1's student is matched to view 2's teacher
        s_cls_g, s_patches_g = student.features(g, masks)
        s_cls_l, _ = student.features(l)
        s_out_g, s_out_l = student.head(s_cls_g), student.head(s_cls_l)
        s_masked_out = s_ibot_head(s_patches_g.flatten(0, 1)[masks.flatten()])
        dino_local = 0.0
        for s in s_out_l.chunk(L):
            lsm = nn.functional.log_softmax(s / student_temp, dim=-1)
            for tq in teacher_list:
                dino_local = dino_local - torch.sum(tq * lsm, dim=-1).mean()
        dino_local = dino_local / n_terms
        lsm = nn.functional.log_softmax(s_out_g / student_temp, dim=-1)
        dino_global = -torch.sum(torch.cat(teacher_list) * lsm, dim=-1).mean() * 2 / n_terms
        ko = sum(koleo(c) for c in s_cls_g.chunk(2))
        lossfunc = torch.sum(q_patch * nn.functional.log_softmax(s_masked_out / student_temp, dim=-1), dim=-1)
        ibot = -(lossfunc * masks_weight).sum() / masks.shape[0] * 2 * 0.5
        dino = dino_local + dino_global
        loss = dino + koleo_w * ko + ibot_w * ibot
        opt.zero_grad()
        loss.backward()
        grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in student.parameters() if p.grad is not None))
        if v2_optim:
            for _, m in modules:
                torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
        else:
            clip_gradients(student, clip)
        if epoch < 1 and not v2_optim:
            for n, p in student.named_parameters():
                if "last_layer" in n:
                    p.grad = None
        opt.step()
        with torch.no_grad():
            for ps, pt in zip(student.parameters(), teacher.parameters()):
                pt.mul_(mom).add_((1 - mom) * ps.detach())
        k = f"step{step}."
        t[k + "global_crops"], t[k + "local_crops"] = g, l
        t[k + "ibot_masks"], t[k + "ibot_weights"] = masks.double(), (weights * masks).double()
        t[k + "hyper"] = torch.tensor([lr, wd, mom, ttemp, float(epoch < 1)])
        t[k + "loss"], t[k + "objective"] = dino.reshape(1), loss.reshape(1)
        t[k + "koleo"], t[k + "ibot"] = ko.reshape(1), ibot.reshape(1)
        t[k + "grad_norm"], t[k + "teacher_entropy"] = grad_norm.reshape(1), entropy.reshape(1)
        if not sk:
            t[k + "center"], t[k + "ibot_center"] = center.reshape(-1), ibot_center.reshape(-1)
        for n, v in student.state_dict().items():
            t[f"{k}student.{n}"] = v.detach().clone()
        for n, v in teacher.state_dict().items():
            t[f"{k}teacher.{n}"] = v.detach().clone()
    save(name, t, {"batch": str(B), "clip": str(clip)})
