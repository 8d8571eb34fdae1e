"""One training step's loss: pixels -> latents -> diffusion-forcing plan -> history -> shortcut targets -> MSE.

`DiTObjective` composes the pieces (data batch, frozen autoencoder and text states, the per-frame plan,
corrupted or self-rolled-out history, self-consistency targets) for the DiT stage; `VAEObjective` is the
reconstruction loss of the tiny per-frame autoencoder stage. Both take a step's generator, so the loss
of step N is a pure function of (weights, seed, N, rank).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.cache import CrossAttnKV
from streamer.model.condition import input_condition, luma
from streamer.model.dit import conditions_on_input
from streamer.model.sampling import to_x0
from streamer.model.vae import TAEHV
from streamer.train.config import TrainConfig
from streamer.train.corrupt import corrupt_history
from streamer.train.data import Batch
from streamer.train.forcing import Plan, frame_loss, make_plan, noisy_clip, per_frame
from streamer.train.looks import darkening
from streamer.train.shortcut import ShortcutDiT, shortcut_target

TextFn = Callable[[list[str]], Tensor]


def trainable_cross_kv(model: ShortcutDiT, text: Tensor) -> CrossAttnKV:
    """CrossAttnKV with gradients (DiT.cross_kv is inference-only: no_grad, in-place buffers)."""
    ctx = model.embed_text(text)
    ks, vs = zip(*(block.cross_attn.kv(ctx) for block in model.layers), strict=True)
    return CrossAttnKV(torch.stack(ks), torch.stack(vs))


class DiTForward(nn.Module):
    """The module DDP wraps: text states -> trainable cross K/V -> block-causal full-sequence forward.

    Wrapping this (not the bare DiT) keeps every trained parameter inside DDP's forward.
    """

    def __init__(self, dit: ShortcutDiT, cfg: TrainConfig) -> None:
        super().__init__()
        self.dit, self.cfg = dit, cfg

    def forward(self, x: Tensor, t: Tensor, text: Tensor, d: Tensor, cond: Tensor | None = None) -> Tensor:
        """x: [B, 16, F, h, w]; t: [B, F] (0-1000); text: [B, L, text_dim]; d: [B, F] step sizes; cond: the
        clean input latents [B, 16, F, h, w] of an input-conditioned DiT (else None) -> v."""
        c = self.cfg
        kv = trainable_cross_kv(self.dit, text)
        extra: dict[str, Tensor] = {} if cond is None else {"cond": cond}
        return self.dit(x, t, kv, chunk_frames=c.chunk_frames, window=c.window or None, sinks=c.sinks, step_size=d,
                        **extra)  # fmt: skip


@dataclass
class StepStats:
    """What one step measured (for the progress line and log.jsonl)."""

    loss: float
    flow_loss: float
    shortcut_loss: float
    pixel_loss: float  # train.pixel_loss times the decoded L1 (0 when off); part of loss, not of flow_loss
    history_frames: int
    paired_frames: int
    shortcut_clips: int


def _gradients(img: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical neighbour differences of [..., H, W] pixels."""
    return img[..., :, 1:] - img[..., :, :-1], img[..., 1:, :] - img[..., :-1, :]


def dark_detail(img: Tensor) -> Tensor:
    """[N, 3, H, W] in [0, 1] -> [N, 1, H, W]: how much darker each pixel's luma is than its 2.5 px
    surround (0 where it is not darker): outlines, ink and strokes."""
    return darkening(luma(img))


def decoded_loss(vae: TAEHV, z0: Tensor, targets: Tensor, rows: Tensor, dark_weight: float = 0.0) -> Tensor:
    """L1 of decode(z0) against `targets`, plus L1 of their pixel gradients, over the frames in `rows`.

    z0: [B, 16, F, h, w] predicted clean latents (with gradients; the autoencoder stays frozen); targets:
    [B, F, 3, H, W] in [0, 1] (a per-frame autoencoder: one frame per latent); rows: bool [B, F]. The whole
    clip is decoded, as the daemon decodes a stream (the decoder's MemBlocks read the frame before). Like
    frame_loss, the normaliser is every frame, so the loss is linear in the samples (DDP). dark_weight:
    each pixel's L1 counts 1 + dark_weight x dark_detail(target) (the gradient terms are not weighted)."""
    if vae.temporal:
        raise ValueError("train.pixel_loss needs a per-frame autoencoder (the tiny preset's)")
    if not bool(rows.any()):
        return z0.new_zeros(())
    decoded = vae.decode_unclamped(z0.permute(0, 2, 1, 3, 4).to(next(vae.parameters()).dtype)).float()
    out, tgt = decoded[rows], targets[rows].float()  # [N, 3, H, W]
    weight = 1 + dark_weight * dark_detail(tgt) if dark_weight else 1.0
    err = ((out - tgt).abs() * weight).mean(dim=(1, 2, 3))
    for g_out, g_tgt in zip(_gradients(out), _gradients(tgt), strict=True):
        err = err + (g_out - g_tgt).abs().mean(dim=(1, 2, 3))
    return err.sum() / rows.numel()


def encode_clips(vae: TAEHV, clips: Tensor) -> Tensor:
    """[B, T, 3, H, W] in [0, 1] -> latents [B, 16, F, h, w] with the frozen autoencoder."""
    with torch.no_grad():
        return vae.encode_video(clips.to(next(vae.parameters()).dtype)).permute(0, 2, 1, 3, 4).float()


class DiTObjective:
    """Diffusion forcing + history augmentation + shortcut self-consistency (see module docstrings)."""

    def __init__(self, forward: nn.Module, dit: ShortcutDiT, vae: TAEHV, text: TextFn, cfg: TrainConfig) -> None:
        self.forward, self.dit, self.vae, self.text, self.cfg = forward, dit, vae, text, cfg
        self.min_half = 2.0**-cfg.shortcut_levels
        self.conditioned = conditions_on_input(dit)

    def condition(self, z_in: Tensor, inputs: Tensor) -> Tensor | None:
        """What an input-conditioned DiT gets beside x: the clean latent z_in of the INPUT clips `inputs` (the
        un-looked frames the daemon encodes; and their luma for a luma-conditioned DiT, the daemon's own
        `input_condition`), for every frame of every kind. Target-noised and history frames too: at
        inference every pass, and so every K/V the cache keeps as history, sees its chunk's clean input.
        Every example has an input (the built-in recipe's looks are made from it; a pair folder names it),
        so there is no unconditioned case to invent. None for a plain DiT."""
        return input_condition(self.dit, z_in, inputs) if self.conditioned else None

    def _history(self, batch: Batch, plan: Plan, z_in: Tensor, z_tgt: Tensor, text: Tensor,
                 gen: torch.Generator) -> Tensor:  # fmt: skip
        """Corrupted history content [B, C, F, h, w] (only read where plan.history)."""
        z_hist = z_tgt.clone()
        rows = plan.history.any(1)
        pixel_rows = (rows & ~plan.rollout).nonzero().flatten().tolist()
        if pixel_rows:  # damaged where the targets are (the GPU when training there; JPEG goes via the host)
            damaged = corrupt_history(batch.targets, pixel_rows, self.cfg.corruptions, batch.key)
            z = encode_clips(self.vae, damaged)  # the last frame is never history
            z_hist[pixel_rows, :, : z.shape[2]] = z
        roll = plan.rollout.nonzero().flatten()
        if len(roll):  # the model's own prediction of the clip, noised from the input as it streams
            with torch.no_grad():
                b, f = len(roll), z_tgt.shape[2]
                sigma = (0.3 + 0.6 * torch.rand(b, f, generator=gen, dtype=torch.float64)).to(z_in.device, z_in.dtype)
                level = (sigma + self.cfg.sdedit_offset / 1000).clamp(max=1)
                eps = torch.randn(z_in[roll].shape, generator=gen, dtype=z_in.dtype).to(z_in.device)
                lv, sg = level[:, None, :, None, None], sigma[:, None, :, None, None]
                x = (1 - lv) * z_in[roll] + lv * eps
                zero = torch.zeros(b, f, dtype=z_in.dtype, device=z_in.device)
                cond = self.condition(z_in[roll], batch.inputs[roll])
                v = self.forward(x, 1000 * sigma.float(), text[roll], zero, cond)
                z_hist[roll] = (x - sg * v).to(z_hist.dtype)
        return z_hist

    def loss(self, batch: Batch, gen: torch.Generator) -> tuple[Tensor, StepStats]:
        cfg = self.cfg
        z_in, z_tgt = encode_clips(self.vae, batch.inputs), encode_clips(self.vae, batch.targets)
        b, _, f = z_tgt.shape[:3]
        dev = z_tgt.device
        plan = make_plan(cfg, b, f, gen).to(dev)
        text = self.text(batch.prompts)
        z_hist = self._history(batch, plan, z_in, z_tgt, text, gen)
        eps = torch.randn(z_tgt.shape, generator=gen, dtype=z_tgt.dtype).to(dev)
        x, t, label = noisy_clip(plan, z_in, z_tgt, z_hist, eps)
        cond = self.condition(z_in, batch.inputs)
        d = torch.zeros(b, f, dtype=torch.float32, device=dev)
        sc_rows = plan.shortcut.nonzero().flatten()
        if len(sc_rows):
            d[sc_rows, -1] = plan.d_full[sc_rows].float()
            base = d[sc_rows].clone()
            base[:, -1] = 0

            def fn(xx: Tensor, tt: Tensor, dd: Tensor) -> Tensor:
                return self.forward(xx, tt, text[sc_rows], dd, None if cond is None else cond[sc_rows])

            target = shortcut_target(fn, x[sc_rows], t[sc_rows], base, f - 1, plan.d_full[sc_rows], self.min_half)
            label = label.clone()
            label[sc_rows, :, -1] = target.to(label.dtype)
        pred = self.forward(x, t, text, d, cond)
        weight = plan.weight
        loss = frame_loss(pred, label, weight)
        px = 0.0
        if cfg.pixel_loss:  # paired frames only: what the daemon streams (no history, no shortcut frames)
            z0 = to_x0(x, pred, per_frame(plan.sigma, x))  # the daemon's single step (the level it is told)
            targets = batch.targets.to(dev)
            pixel = cfg.pixel_loss * decoded_loss(self.vae, z0, targets, plan.paired, cfg.pixel_dark_weight)
            loss, px = loss + pixel, float(pixel.detach())
        with torch.no_grad():
            sc_w = torch.zeros_like(weight)
            sc_w[sc_rows, -1] = 1
            sc = frame_loss(pred, label, sc_w)
        lv = float(loss.detach())
        stats = StepStats(lv, lv - float(sc) - px, float(sc), px, int(plan.history.sum()), int(plan.paired.sum()),
                          len(sc_rows))  # fmt: skip
        return loss, stats


class VAEObjective:
    """Reconstruction loss of the per-frame autoencoder: MSE + 0.5 x L1 of (decode(encode(x)), x)."""

    def __init__(self, forward: nn.Module) -> None:
        self.forward = forward

    def loss(self, batch: Batch, gen: torch.Generator) -> tuple[Tensor, StepStats]:
        del gen  # the data batch already carries all of this step's randomness
        clips = torch.cat([batch.inputs, batch.targets])  # both the camera look and the styled look
        recon = self.forward(clips)
        loss = F.mse_loss(recon, clips) + 0.5 * F.l1_loss(recon, clips)
        lv = float(loss.detach())
        return loss, StepStats(lv, lv, 0.0, 0.0, 0, 0, 0)


class VAEForward(nn.Module):
    """encode -> decode with gradients (TAEHV.decode_video clamps; training needs the unclamped path)."""

    def __init__(self, vae: TAEHV) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, clips: Tensor) -> Tensor:
        return self.vae.decode_unclamped(self.vae.encode_video(clips))
