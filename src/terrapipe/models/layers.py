"""Building blocks of the LatentMIM encoder and predictor: patch embeddings, encodings, attention blocks,
band dropout and bandset merge/unmerge.

References: FlexiViT (Beyer et al., CVPR 2023) for patch embeddings that serve any patch size by
pseudo-inverse resizing one stored kernel; OlmoEarth (allenai/olmoearth_pretrain, re-implemented from
a description in reference/olmoearth-behaviour.md) for the composite encodings, the cross-attention
predictor, band dropout and BandsetMerge/BandsetUnmerge.

Shapes: B batch, H W pixels, h w tokens per side (H = h * p for patch size p), T timesteps, C bands of
one group, G band groups, D model width, S packed sequence length.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


@functools.lru_cache(maxsize=32)
def _resize_matrix(base: int, new: int) -> torch.Tensor:
    """The linear map (base*base -> new*new) that bilinearly resizes a base x base patch to new x new."""
    eye = torch.eye(base * base, dtype=torch.float64).reshape(base * base, 1, base, base)
    resized = F.interpolate(eye, size=(new, new), mode="bilinear", align_corners=False, antialias=new < base)
    return resized.reshape(base * base, new * new).T  # (new², base²)


def pi_resize(kernel: torch.Tensor, new: int) -> torch.Tensor:
    """FlexiViT's PI-resize: the new x new kernel w' with <x', w'> = <x, w> for x' = resize(x).

    Args: kernel (D, C, b, b). Returns (D, C, new, new).
    """
    base = kernel.shape[-1]
    if new == base:
        return kernel
    resize = _resize_matrix(base, new).to(kernel)                 # (new², b²)
    pinv = torch.linalg.pinv(resize.T.double()).to(kernel)          # (new², b²): solves B^T w' = w
    flat = kernel.reshape(*kernel.shape[:2], base * base)           # (D, C, b²)
    return (flat @ pinv.T).reshape(*kernel.shape[:2], new, new)


class FlexiPatchEmbed(nn.Module):
    """Embed one band group's pixels into one token per patch, for any patch size (FlexiViT).

    Args: x (B, H, W, T, C), patch size p dividing H and W. Returns (B, h, w, T, D).
    """

    def __init__(self, channels: int, dim: int, base_patch: int):
        super().__init__()
        self.base_patch = base_patch
        self.weight = nn.Parameter(torch.empty(dim, channels, base_patch, base_patch))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.trunc_normal_(self.weight, std=1.0 / math.sqrt(channels * base_patch * base_patch))

    def forward(self, x: torch.Tensor, patch: int) -> torch.Tensor:
        B, H, W, T, C = x.shape
        h, w = H // patch, W // patch
        kernel = pi_resize(self.weight, patch).reshape(self.weight.shape[0], -1)   # (D, C*p*p)
        x = x.reshape(B, h, patch, w, patch, T, C)                               # split pixels into patches
        x = x.permute(0, 1, 3, 5, 6, 2, 4).reshape(B, h, w, T, C * patch * patch)  # (B, h, w, T, C*p*p)
        return x @ kernel.T + self.bias


def sincos(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids of ``positions`` (any shape) -> (*shape, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half)
    angles = positions.float()[..., None] * freqs
    out = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(out, (0, dim - 2 * half))


def space_encoding(h: int, w: int, patch: int, dim: int, device) -> torch.Tensor:
    """2-D sinusoids of each token's centre in pixels (so patch sizes share one scale). Returns (h, w, dim)."""
    ys = (torch.arange(h, device=device) + 0.5) * patch
    xs = (torch.arange(w, device=device) + 0.5) * patch
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([sincos(grid_y, dim // 2), sincos(grid_x, dim - dim // 2)], dim=-1)


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Attention(nn.Module):
    """Multi-head attention over packed sequences; ``key_valid`` (B, S_k) marks real (unpadded) keys."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        q = self.q(x).reshape(B, S, self.heads, D // self.heads).transpose(1, 2)            # (B, heads, S, D/h)
        k, v = self.kv(context).reshape(B, -1, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention (encoder) or cross-attention to ``context`` (predictor)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, cross: bool = False):
        super().__init__()
        self.cross = cross
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x, valid, context=None, context_valid=None):
        y = self.norm1(x)
        if self.cross:
            x = x + self.attn(y, self.norm_context(context), context_valid)
        else:
            x = x + self.attn(y, y, valid)
        return x + self.mlp(self.norm2(x))


def band_dropout(x: torch.Tensor, groups: tuple[tuple[int, ...], ...], rate: float, random_rate: bool,
                 generator: torch.Generator) -> torch.Tensor:
    """Zero whole bands per sample (OlmoEarth's band dropout); at least one band of each group stays.

    Each band of a group with more than one band is kept with probability 1 - r, the draw shared by all
    pixels and timesteps of the sample; r is ``rate``, or r ~ U(0, rate) drawn once per group and
    forward with ``random_rate``. Dropped bands become 0 with no rescaling (0 is mu - 2 sigma after
    normalization, not the mean). Args: x (B, ..., C) normalized values. Returns the same shape.
    """
    B, C = x.shape[0], x.shape[-1]
    keep = torch.ones(B, C, dtype=x.dtype, device=x.device)
    for group in groups:
        if len(group) < 2:
            continue
        r = rate * float(torch.rand((), generator=generator)) if random_rate else rate
        kept = torch.rand(B, len(group), generator=generator) >= r                      # (B, C_g)
        rescue = torch.randint(len(group), (B,), generator=generator)
        none_kept = ~kept.any(dim=1)
        kept[none_kept, rescue[none_kept]] = True
        keep[:, list(group)] = kept.to(keep)
    return x * keep.reshape(B, *([1] * (x.dim() - 2)), C)


class BandsetMerge(nn.Module):
    """Merge n band-group tokens at one position into one (OlmoEarth's BandsetMerge).

    Linear(n*D -> D) initialised to the mean of the n groups, then GELU and Linear(D -> D). OlmoEarth
    initialises the second layer to the identity, which makes the output GELU(mean), not the mean; here
    the second layer is a residual branch initialised to zero, so at initialisation the merge is exactly
    mean pooling. Groups not encoded are zeroed and the result scaled by n / (encoded groups), so it is
    the mean of the encoded groups. Args: tokens (..., n, D), encoded (..., n) bool. Returns (..., D).
    """

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.first = nn.Linear(n * dim, dim)
        self.second = nn.Linear(dim, dim)
        with torch.no_grad():
            self.first.weight.copy_(torch.eye(dim).repeat(1, n) / n)
            self.first.bias.zero_()
            self.second.weight.zero_()
            self.second.bias.zero_()

    def forward(self, tokens: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        active = encoded.sum(-1, keepdim=True).clamp(min=1).to(tokens)           # (..., 1)
        tokens = tokens * encoded[..., None].to(tokens)                          # leak no decoded group
        merged = self.first(tokens.flatten(-2)) * (self.n / active)             # (..., n*D) -> (..., D)
        return merged + self.second(F.gelu(merged))


class BandsetUnmerge(nn.Module):
    """Split one merged token back into n band-group tokens: Linear(D -> n*D). Args (..., D). Returns (..., n, D)."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.proj = nn.Linear(dim, n * dim)
        with torch.no_grad():  # start as a copy of the merged token into every group
            self.proj.weight.copy_(torch.eye(dim).repeat(n, 1))
            self.proj.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens).unflatten(-1, (self.n, tokens.shape[-1]))
