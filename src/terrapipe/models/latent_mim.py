"""LatentMIM: a multimodal FlexiViT-style encoder, a cross-attention predictor and a target encoder
(OlmoEarth, allenai/olmoearth_pretrain; re-implemented from reference/olmoearth-behaviour.md section 4).

Token layout, per modality m with G band groups: spatial (B, h, w, T, G, D) (maps T = 1), time-only
ERA5 (B, T, G, D); masks and roles have the same shape without D. The encoder keeps only
ONLINE_ENCODER tokens (packed per sample, padded to the longest), the predictor's queries are the
DECODER tokens, which attend (cross-attention only) to the encoded tokens. Targets are the target
encoder's tokens of the unmasked batch: with exit depth 0 the per-group patch embeddings, which with
EMA (1, 1) stay the frozen random initial projection, as in the official runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terrapipe.modalities import modality
from terrapipe.models.layers import (
    BandsetMerge,
    BandsetUnmerge,
    Block,
    FlexiPatchEmbed,
    band_dropout,
    sincos,
    space_encoding,
)
from terrapipe.train.experiments import ExperimentConfig
from terrapipe.train.roles import MaskValue

ENCODER = int(MaskValue.ONLINE_ENCODER)
DECODER = int(MaskValue.DECODER)


def _grid(tokens: torch.Tensor) -> tuple[int, ...]:
    return tuple(tokens.shape[1:-2])


def pack(x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather the kept tokens of each sample to the front. x (B, N, D), keep (B, N) bool.

    Returns packed (B, S, D), the source index (B, S) and valid (B, S), S = the most kept in a sample.
    """
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices          # kept first, in order
    counts = keep.sum(1)
    S = max(int(counts.max()), 1)
    index = order[:, :S]
    valid = torch.arange(S, device=x.device)[None, :] < counts[:, None]
    return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1])), index, valid


def unpack(packed: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of ``pack``: (B, S, D) -> (B, N, D), zeros where nothing was kept."""
    out = packed.new_zeros(packed.shape[0], n, packed.shape[-1])
    return out.scatter(1, index[..., None].expand(-1, -1, packed.shape[-1]), packed * valid[..., None])


class CompositeEncoding(nn.Module):
    """Quarters of D: a learned band-group embedding, the timestep position, the month (sinusoids) and
    the 2-D token position in pixels (OlmoEarth's composite encodings)."""

    def __init__(self, config: ExperimentConfig, dim: int, keys: tuple[str, ...]):
        super().__init__()
        self.quarter = dim // 4
        self.dim = dim
        self.group = nn.ParameterDict({m: nn.Parameter(torch.randn(len(config.groups(m)), self.quarter) * 0.02)
                                       for m in keys})

    def forward(self, key: str, grid: tuple[int, ...], groups: int, timestamps: torch.Tensor, patch: int):
        """The encoding of every token of modality ``key``: (B, *grid, groups, D)."""
        q, mod = self.quarter, modality(key)
        B, device = timestamps.shape[0], timestamps.device
        group = self.group[key] if groups == self.group[key].shape[0] else self.group[key].mean(0, keepdim=True)
        T = grid[-1] if mod.spatial else grid[0]
        if mod.multitemporal:
            time = sincos(torch.arange(T, device=device), q).expand(B, T, q)                  # (B, T, q)
            month = sincos(timestamps[:, :T, 1].float() - 1, q, max_period=12.0 * 4)           # (B, T, q)
        else:
            time = month = torch.zeros(B, T, q, device=device)
        if mod.spatial:
            h, w = grid[0], grid[1]
            space = space_encoding(h, w, patch, q, device)                                      # (h, w, q)
            shape = (B, h, w, T, groups)
            parts = [group[None, None, None, None].expand(*shape, q),
                     time[:, None, None, :, None].expand(*shape, q),
                     month[:, None, None, :, None].expand(*shape, q),
                     space[None, :, :, None, None].expand(*shape, q)]
        else:
            shape = (B, T, groups)
            parts = [group[None, None].expand(*shape, q), time[:, :, None].expand(*shape, q),
                     month[:, :, None].expand(*shape, q), torch.zeros(*shape, q, device=device)]
        out = torch.cat(parts, dim=-1)
        return F.pad(out, (0, self.dim - out.shape[-1]))


class TokenEmbedding(nn.Module):
    """One patch embedding per (spatial modality, band group); a Linear per group of a time-only one."""

    def __init__(self, config: ExperimentConfig, dim: int, keys: tuple[str, ...]):
        super().__init__()
        self.config = config
        self.embed = nn.ModuleDict()
        for key in keys:
            mod, sizes = modality(key), config.groups(key).sizes
            self.embed[key] = nn.ModuleList(
                FlexiPatchEmbed(c, dim, config.model.base_patch_size) if mod.spatial else nn.Linear(c, dim)
                for c in sizes)

    def forward(self, batch, keys, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per modality (B, *grid, G, D). ``generator`` given: apply the configured band dropout."""
        dropout = self.config.model.band_dropout
        chosen = dropout.modalities if dropout.modalities is not None else self.config.mix.encode
        out = {}
        for key in keys:
            x = batch.modality(key)
            groups = self.config.groups(key).indices
            if generator is not None and dropout.rate > 0 and key in chosen:
                x = band_dropout(x, groups, dropout.rate, dropout.random, generator)
            parts = [layer(x[..., list(g)], batch.patch_size) if isinstance(layer, FlexiPatchEmbed)
                     else layer(x[..., list(g)]) for layer, g in zip(self.embed[key], groups)]
            out[key] = torch.stack(parts, dim=-2)                                    # (B, *grid, G, D)
        return out


@dataclass
class Encoded:
    tokens: dict[str, torch.Tensor]   # per modality (B, *grid, G', D); zeros where not encoded
    roles: dict[str, torch.Tensor]    # per modality (B, *grid, G'); G' = 1 for merged modalities
    pooled: torch.Tensor              # (B, D): projected mean of the encoded tokens (InfoNCE, ERA5 heads)


class Encoder(nn.Module):
    """The online encoder over ``keys`` (the encodable modalities); the target encoder is the same class
    over every token modality, so it also embeds the decode-only ones."""

    def __init__(self, config: ExperimentConfig, keys: tuple[str, ...]):
        super().__init__()
        size = config.model.encoder
        self.config = config
        self.dim = size.dim
        self.embedding = TokenEmbedding(config, size.dim, keys)
        self.encoding = CompositeEncoding(config, size.dim, keys)
        self.blocks = nn.ModuleList(Block(size.dim, size.heads, config.model.mlp_ratio) for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.dim)
        self.project = nn.Linear(size.dim, size.dim)
        merged = [k for k in config.mix.encode if len(config.groups(k)) > 1] if config.model.merge.enabled else []
        self.merges = nn.ModuleDict({k: BandsetMerge(size.dim, len(config.groups(k))) for k in merged})
        self.merge_enabled = bool(merged)  # the target encoder turns this off and keeps the modules (EMA lists)

    def embed(self, batch, keys, generator=None) -> dict[str, torch.Tensor]:
        """Patch embeddings plus composite encodings, per modality (B, *grid, G, D)."""
        tokens = self.embedding(batch, keys, generator)
        return {k: t + self.encoding(k, _grid(t), t.shape[-2], batch.timestamps, batch.patch_size)
                for k, t in tokens.items()}

    def _merge(self, tokens: dict, roles: dict) -> tuple[dict, dict]:
        tokens, roles = dict(tokens), dict(roles)
        for key, merge in self.merges.items():
            encoded = roles[key] == ENCODER                                            # (B, *grid, G)
            tokens[key] = merge(tokens[key], encoded)[..., None, :]                    # (B, *grid, 1, D)
            roles[key] = torch.where(encoded.any(-1), ENCODER, roles[key].min(-1).values)[..., None]
        return tokens, roles

    def forward(self, batch, masks: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> Encoded:
        keys = self.config.mix.encode
        tokens = self.embed(batch, keys, generator)
        roles = {k: masks[k] for k in keys}
        merge_at = self.config.model.merge.after_layer if self.merge_enabled else None
        if merge_at == 0:
            tokens, roles = self._merge(tokens, roles)
        x, index, valid, layout = self._flatten_pack(tokens, roles)
        for depth, block in enumerate(self.blocks, start=1):
            x = block(x, valid)
            if merge_at == depth:
                tokens = self._unpack_split(x, index, valid, layout)
                tokens, roles = self._merge(tokens, roles)
                x, index, valid, layout = self._flatten_pack(tokens, roles)
        x = self.norm(x)
        pooled = (x * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp(min=1)   # (B, D)
        return Encoded(self._unpack_split(x, index, valid, layout), roles, self.project(pooled))

    @staticmethod
    def _flatten_pack(tokens: dict, roles: dict):
        layout = [(k, t.shape[1:-1]) for k, t in tokens.items()]                       # grid + G per modality
        x = torch.cat([t.flatten(1, -2) for t in tokens.values()], dim=1)             # (B, N, D)
        keep = torch.cat([roles[k].flatten(1) for k in tokens], dim=1) == ENCODER     # (B, N)
        packed, index, valid = pack(x, keep)
        return packed, index, valid, layout

    @staticmethod
    def _unpack_split(x, index, valid, layout) -> dict[str, torch.Tensor]:
        sizes = [int(torch.tensor(shape).prod()) for _, shape in layout]
        dense = unpack(x, index, valid, sum(sizes))                                   # (B, N, D)
        return {k: part.reshape(x.shape[0], *shape, x.shape[-1])
                for (k, shape), part in zip(layout, dense.split(sizes, dim=1))}

    def targets(self, batch, present: dict[str, torch.Tensor], exit_depth: int) -> dict[str, torch.Tensor]:
        """Target tokens of the unmasked batch, per modality (B, *grid, G, D) (as the target encoder)."""
        keys = self.config.token_modalities
        if exit_depth == 0:
            return self.embedding(batch, keys)
        tokens = self.embed(batch, keys)
        roles = {k: torch.where(present[k], ENCODER, int(MaskValue.MISSING)) for k in keys}
        x, index, valid, layout = self._flatten_pack(tokens, roles)
        for block in self.blocks[:exit_depth]:
            x = block(x, valid)
        return self._unpack_split(x, index, valid, layout)


class Predictor(nn.Module):
    """Cross-attention decoder: learned mask tokens at DECODER positions attend to the encoded tokens."""

    def __init__(self, config: ExperimentConfig, encoder_dim: int):
        super().__init__()
        size = config.model.decoder
        self.config = config
        self.input_norm = nn.LayerNorm(encoder_dim)
        self.input = nn.Linear(encoder_dim, size.dim)
        self.mask_token = nn.Parameter(torch.zeros(size.dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.encoding = CompositeEncoding(config, size.dim, config.token_modalities)
        self.blocks = nn.ModuleList(Block(size.dim, size.heads, config.model.mlp_ratio, cross=True)
                                    for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.dim)
        self.output = nn.Linear(size.dim, encoder_dim)
        merged = [k for k in config.mix.encode if len(config.groups(k)) > 1] if config.model.merge.enabled else []
        self.unmerges = nn.ModuleDict({k: BandsetUnmerge(encoder_dim, len(config.groups(k))) for k in merged})

    def forward(self, batch, encoded: Encoded, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Predictions for every token (B, N_m, D_enc) per modality; only DECODER tokens are meaningful."""
        context, queries, context_keep, query_keep, layout = [], [], [], [], []
        for key in self.config.token_modalities:
            roles = masks[key]                                                        # (B, *grid, G)
            grid, groups = tuple(roles.shape[1:-1]), roles.shape[-1]
            encoding = self.encoding(key, grid, groups, batch.timestamps, batch.patch_size)  # (B, *grid, G, Dd)
            if key in encoded.tokens:
                tokens = encoded.tokens[key]
                if key in self.unmerges:
                    tokens = self.unmerges[key](tokens[..., 0, :])                    # (B, *grid, G, D)
                context.append((self.input(self.input_norm(tokens)) + encoding).flatten(1, -2))
                context_keep.append((roles == ENCODER).flatten(1))
            queries.append((self.mask_token + encoding).flatten(1, -2))
            query_keep.append((roles == DECODER).flatten(1))
            layout.append((key, roles.flatten(1).shape[1]))
        kv, _, kv_valid = pack(torch.cat(context, 1), torch.cat(context_keep, 1))
        q, q_index, q_valid = pack(torch.cat(queries, 1), torch.cat(query_keep, 1))
        for block in self.blocks:
            q = block(q, q_valid, kv, kv_valid)
        out = unpack(self.output(self.norm(q)), q_index, q_valid, sum(n for _, n in layout))
        return dict(zip([k for k, _ in layout], out.split([n for _, n in layout], dim=1)))


class Era5MeanEncoder(nn.Sequential):
    """Seed 000 exp 2: mean over time, then MLP(C -> hidden -> D) with LayerNorms. (B, T, C) -> (B, D)."""

    def __init__(self, channels: int, hidden: int, dim: int):
        super().__init__(nn.Linear(channels, hidden), nn.LayerNorm(hidden), nn.GELU(),
                         nn.Linear(hidden, dim), nn.LayerNorm(dim))

    def forward(self, series: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        counts = valid.sum(1).clamp(min=1)
        return super().forward((series * valid).sum(1) / counts)                      # (B, C) -> (B, D)


class Era5Conv1dEncoder(nn.Module):
    """Seed 000 exp 4: Conv1d(C -> hidden, k) over time, LayerNorm per step, GELU, mean over time,
    Linear(hidden -> D), LayerNorm. (B, T, C) -> (B, D)."""

    def __init__(self, channels: int, hidden: int, dim: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, hidden, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(hidden)
        self.proj = nn.Sequential(nn.Linear(hidden, dim), nn.LayerNorm(dim))

    def forward(self, series: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.conv((series * valid).transpose(1, 2)).transpose(1, 2)               # (B, T, hidden)
        x = F.gelu(self.norm(x))
        step_valid = valid.any(-1, keepdim=True).to(x)                                  # (B, T, 1)
        return self.proj((x * step_valid).sum(1) / step_valid.sum(1).clamp(min=1))


def era5_head(config: ExperimentConfig, dim: int, months: int) -> nn.Module | None:
    """The pooled-representation ERA5 module of the experiment (None when ERA5 is unused or a token)."""
    era5, channels = config.era5, 6
    if era5.kind == "regression":
        return nn.Linear(dim, channels if era5.target == "mean" else months * channels)
    if era5.kind == "clip_alignment":
        if era5.encoder == "mean":
            return Era5MeanEncoder(channels, era5.hidden_dim, dim)
        return Era5Conv1dEncoder(channels, era5.hidden_dim, dim, era5.kernel_size)
    return None


class LatentMIM(nn.Module):
    """Online encoder + predictor + target encoder (+ the ERA5 pooled head); see the module docstring."""

    def __init__(self, config: ExperimentConfig, months: int = 12):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config, tuple(config.mix.encode))
        self.predictor = Predictor(config, self.encoder.dim)
        # the target starts as a copy of the online encoder (decode-only embeddings: its own random init)
        self.target_encoder = Encoder(config, config.token_modalities)
        self.target_encoder.load_state_dict(self.encoder.state_dict(), strict=False)
        self.target_encoder.merge_enabled = False
        for p in self.target_encoder.parameters():
            p.requires_grad_(False)
        self.era5_head = era5_head(config, self.encoder.dim, months)

    def train(self, mode: bool = True):
        super().train(mode)
        self.target_encoder.eval()
        return self

    @torch.no_grad()
    def targets(self, batch) -> dict[str, torch.Tensor]:
        tokens = self.target_encoder.targets(batch, batch.present, self.config.model.target.exit_depth)
        return {k: t.flatten(1, -2) for k, t in tokens.items()}                         # (B, N_m, D)

    def forward(self, batch, masks, generator: torch.Generator | None = None):
        """One masked view: (predictions per modality (B, N_m, D), the encoder output)."""
        encoded = self.encoder(batch, masks, generator if self.training else None)
        return self.predictor(batch, encoded, masks), encoded

    @torch.no_grad()
    def update_target(self, step: int, max_steps: int) -> float:
        """EMA: decay = start + step (end - start) / max_steps; (1, 1) leaves the target frozen."""
        start, end = self.config.model.target.ema
        decay = start + step * (end - start) / max(max_steps, 1)
        if decay < 1.0:
            target = dict(self.target_encoder.named_parameters())
            for name, online in self.encoder.named_parameters():
                target[name].lerp_(online.detach(), 1.0 - decay)
        return decay
