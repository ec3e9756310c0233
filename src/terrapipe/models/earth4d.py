"""Earth4D: a multi-resolution spatiotemporal hash encoding of (lat, lon, elevation, time), in pure PyTorch.

References: Müller et al. 2022, "Instant Neural Graphics Primitives with a Multiresolution Hash Encoding"
(arXiv 2201.05989) for the hash grid; DeepEarth's Earth4D (legel/deepearth, the 162-D version of Sept
2025, re-implemented from the description in reference/deepearth-behaviour.md section 1) for the four
3-D grids over Earth-centred coordinates and time, smoothstep blending and the U(-0.1, 0.1) init.

Pipeline: WGS84 -> ECEF (float64) / ecef_scale_m -> (v + 1) / 2 in [0, 1]; time (2t - 1) * time_margin,
then (v + 1) / 2. Four grids read (x, y, z), (x, y, t), (y, z, t), (x, z, t); the output concatenates
their features [xyz | xyt | yzt | xzt]. Per level: pos = u * scale, floor + fraction, smoothstep
weights 3f^2 - 2f^3, the 8 cell corners, a row-major index when the level's vertices fit its table or
the XOR-prime hash mod T otherwise. Deliberate differences from the CUDA original:
  - every index product, stride and modulo is int64 (the original's uint32 strides wrapped to 0 and
    silently dropped the z axis and the high bits of y at xyz levels 7 and 12-18); only finished rows,
    each below the grid's row count, are narrowed to int32 for the XOR/sum of the axes and the gathers;
  - coordinate math stays float64 and autocast is off inside the encoder (fp16 inputs quantise the
    globe to kilometres);
  - the out-of-domain policy is explicit (``out_of_domain``, see ``normalize_coordinates``);
  - gradients flow to the tables only: coordinates are constants (no dy/dx).

Shapes: B samples, G grids of one shape, L levels of a grid, 8 cell corners, F features per level, R table
rows of a grid. Tables are stored feature-major, (F, R): every gather and scatter then runs on contiguous
rows. The three spatiotemporal grids share one GridConfig, so their corner rows and weights are computed
together, as one (3, L, 8, B) block.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from terrapipe.errors import TerrapipeError
from terrapipe.models.earth4d_config import (  # noqa: F401 - re-exported: the encoder's one namespace
    GRID_AXES,
    HOURS_PER_YEAR,
    MAX_RESOLUTION,
    PRESETS,
    PRIMES,
    WGS84_A,
    WGS84_E2,
    WGS84_F,
    Earth4DConfig,
    GridConfig,
)


class CoordinateDomainError(TerrapipeError, ValueError):
    """Coordinates outside the encoder's domain (out_of_domain="error", or non-finite under "clamp")."""


def wgs84_to_ecef(lat_deg: torch.Tensor, lon_deg: torch.Tensor, elev_m: torch.Tensor) -> torch.Tensor:
    """Earth-centred, Earth-fixed metres on the WGS84 ellipsoid (X to (0, 0), Y to (0, 90E), Z to the pole).

    Args: lat_deg, lon_deg, elev_m of one shape S (any float dtype). Returns (*S, 3) float64.
    """
    lat = torch.deg2rad(lat_deg.double())
    lon = torch.deg2rad(lon_deg.double())
    elev = elev_m.double()
    sin_lat = torch.sin(lat)
    prime_vertical = WGS84_A / torch.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    ring = (prime_vertical + elev) * torch.cos(lat)
    return torch.stack([ring * torch.cos(lon), ring * torch.sin(lon),
                        (prime_vertical * (1.0 - WGS84_E2) + elev) * sin_lat], dim=-1)


def _domain_problem(row: list[float]) -> str:
    """Why one (lat, lon, elevation, t) row is outside the domain, for the error message."""
    lat, lon, _, t = row
    if not all(math.isfinite(v) for v in row):
        return "a coordinate is not finite"
    if abs(lat) > 90:
        return "latitude outside [-90, 90]"
    if abs(lon) > 180:
        return "longitude outside [-180, 180]"
    if not 0 <= t <= 1:
        return "t_norm outside [0, 1]"
    return "the point is outside the ECEF cube (|x|, |y| or |z| > ecef_scale_m: elevation too far from the surface)"


def normalize_coordinates(coords: torch.Tensor, config: Earth4DConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Map (lat deg, lon deg, elevation m, t_norm) rows to the unit cube, applying the out-of-domain policy.

    The domain: finite values, |lat| <= 90, |lon| <= 180, t_norm in [0, 1], and each normalised ECEF axis
    x / ecef_scale_m in [-1, 1] (at the default scale, elevations up to ~21.8 km at the equator and ~43 km
    at the poles). Outside it:
      - "error": raise CoordinateDomainError naming how many rows fail and the first one, with its reason;
      - "zero": like the original kernel, a grid gives zero features (and zero table gradient) for a row
        when any of its axes is outside: t_norm outside [0, 1] zeroes xyt/yzt/xzt only, a cube axis
        outside zeroes the grids that read that axis; a non-finite value or |lat| > 90 or |lon| > 180
        zeroes every grid of the row. (The original encodes t_norm up to the margin, [-0.056, 1.056];
        here t_norm's contract [0, 1] is the domain.)
      - "clamp": latitude to [-90, 90], longitude to [-180, 180], t_norm to [0, 1], then each cube axis to
        [0, 1]; non-finite rows still raise (no nearest point exists).

    Args: coords (B, 4) float32 or float64. Returns unit (B, 4) float64 columns (x, y, z, t) in [0, 1]
    (invalid entries set to 0) and valid (B, 4) bool per column (all True outside "zero").
    """
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"Earth4D coordinates must be (B, 4) rows of (lat, lon, elevation_m, t_norm); "
                         f"got shape {tuple(coords.shape)}")
    if not coords.is_floating_point():
        raise ValueError(f"Earth4D coordinates must be float32 or float64, got {coords.dtype}")
    coords = coords.double()
    lat, lon, elev, t = coords.unbind(dim=1)
    finite = torch.isfinite(coords).all(dim=1)                                       # (B,)
    mode = config.out_of_domain
    if mode == "clamp":
        _raise_if_any(coords, ~finite, "drop or repair these rows upstream (clamp cannot move a non-finite value "
                                       "into the domain)")
        lat, lon, t = lat.clamp(-90, 90), lon.clamp(-180, 180), t.clamp(0, 1)
    ecef = wgs84_to_ecef(lat, lon, elev) / config.ecef_scale_m                      # (B, 3) nominally [-1, 1]
    time = (2 * t - 1) * config.time_margin                                          # (B,) in [-margin, margin]
    unit = (torch.cat([ecef, time[:, None]], dim=1) + 1) / 2                         # (B, 4) x, y, z, t
    if mode == "clamp":
        return unit.clamp(0, 1), torch.ones_like(unit, dtype=torch.bool)
    geographic = finite & (lat.abs() <= 90) & (lon.abs() <= 180)                      # (B,)
    valid = (unit >= 0) & (unit <= 1) & geographic[:, None]                           # (B, 4)
    valid[:, 3] &= (t >= 0) & (t <= 1)
    if mode == "error":
        _raise_if_any(coords, ~valid.all(dim=1), "clean the coordinates upstream, or set out_of_domain to 'zero' "
                                                 "or 'clamp' to encode them")
    return torch.where(valid, unit, torch.zeros_like(unit)), valid


def _raise_if_any(coords: torch.Tensor, bad: torch.Tensor, fix: str) -> None:
    count = int(bad.sum())
    if count == 0:
        return
    first = int(bad.nonzero()[0, 0])
    row = coords[first].tolist()
    raise CoordinateDomainError(
        f"Earth4D: {count} of {len(coords)} coordinate rows are outside the encoder's domain; first is row "
        f"{first} (lat={row[0]}, lon={row[1]}, elevation_m={row[2]}, t_norm={row[3]}): "
        f"{_domain_problem(row)}. Fix: {fix}.")


class _GatherBlend(torch.autograd.Function):
    """Blend each (grid, level, sample)'s 8 corner rows by their weights; backward scatters the weighted
    gradient. One call serves the G grids of one shape (the three spatiotemporal grids share theirs).

    Tables are feature-major (F, R), so every gather, the weighted sum over corners and the backward's
    ``scatter_add_`` run on contiguous 1-D rows. Autograd of ``table[index]`` would instead back-
    propagate through ``index_put_(accumulate=True)``: slower, and not bitwise repeatable on CPU, whereas
    1-D ``scatter_add_`` is (and is deterministic on CUDA under ``torch.use_deterministic_algorithms``).
    Gathers and scatters read the int32 rows as they are (widening them to int64 first costs a pass and an
    allocation, for no measurable gain). Args: index (G, L, 8, B) ``index_dtype``; weights (G, L, 8, B);
    tables: G of (F, R). Returns (B, G * L * F), grid-, then level-, then feature-major.
    """

    @staticmethod
    def forward(ctx, index, weights, *tables):
        ctx.save_for_backward(index, weights)
        ctx.rows = [table.shape[1] for table in tables]
        grids, levels, _, batch = index.shape
        features = ctx.features = tables[0].shape[0]
        corners = weights.new_empty(features, levels, 8, batch)   # one grid's corner rows, reused grid by grid
        out = weights.new_empty(features, grids, levels, batch)
        for grid, table in enumerate(tables):
            for feature, column in enumerate(table):   # 1-D gathers: 2x faster than one along dim 1
                torch.index_select(column, 0, index[grid].view(-1), out=corners[feature].view(-1))
            blended = out[:, grid]                     # (F, L, B), accumulated corner by corner: no
            torch.mul(corners[:, :, 0], weights[grid, :, 0], out=blended)     # (F, L, 8, B) product exists
            for corner in range(1, 8):
                blended.addcmul_(corners[:, :, corner], weights[grid, :, corner])
        return out.permute(3, 1, 2, 0).reshape(batch, grids * levels * features)            # (B, G * L * F)

    @staticmethod
    def backward(ctx, grad_out):
        index, weights = ctx.saved_tensors
        grids, levels, _, batch = index.shape
        grad_out = grad_out.reshape(batch, grids, levels, ctx.features).permute(3, 1, 2, 0).contiguous()  # F,G,L,B
        flat = index.view(grids, -1)                                                             # (G, L * 8 * B)
        grads = [grad_out.new_zeros(grad_out.shape[0], rows) for rows in ctx.rows]              # G x (F, R)
        weighted = torch.empty_like(weights)                                                     # (G, L, 8, B)
        for feature, feature_grad in enumerate(grad_out):                                        # (G, L, B) each
            torch.mul(weights, feature_grad[:, :, None], out=weighted)
            for grid, grad in enumerate(grads):
                grad[feature].scatter_add_(0, flat[grid], weighted[grid].view(-1))
        return (None, None, *grads)


def level_offsets(grid: GridConfig) -> tuple[int, ...]:
    """First table row of each level. Hashed levels come first, level j at j * T, then the direct levels:
    a hashed row is then offset + h with h < T, i.e. offset XOR h, so the offset folds into the hash."""
    hashed = [level for level, direct in enumerate(grid.direct) if not direct]
    offsets = {level: j * grid.table_size for j, level in enumerate(hashed)}
    start = len(hashed) * grid.table_size
    for level, (rows, direct) in enumerate(zip(grid.rows, grid.direct)):
        if direct:
            offsets[level], start = start, start + rows
    return tuple(offsets[level] for level in range(grid.levels))


def index_dtype(grid: GridConfig) -> torch.dtype:
    """The dtype of a grid's final table rows: int32 when every row number fits it, else int64. Only the
    rows after the modulo are narrowed; the hash products themselves are always int64."""
    return torch.int32 if sum(grid.rows) <= torch.iinfo(torch.int32).max else torch.int64


def _level_constants(grid: GridConfig) -> dict[str, torch.Tensor]:
    """Per-level int64 constants of one grid: index coefficients and row offsets."""
    coefficients = [(1, res, res * res) if direct else PRIMES for res, direct in zip(grid.resolutions, grid.direct)]
    return {"coefficients": torch.tensor(coefficients, dtype=torch.int64),                        # (L, 3)
            "offsets": torch.tensor(level_offsets(grid), dtype=torch.int64)}                      # (L,)


def corner_indices(grid: GridConfig, unit: torch.Tensor, valid: torch.Tensor | None = None,
                   constants: dict[str, torch.Tensor] | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The table rows and blend weights of every level's 8 cell corners, all levels (and grids) at once.

    Corner c = 4i + 2j + k takes the lower (0) or upper (1) vertex on x (i), y (j), z (k). Direct levels
    index x + y * res + z * res^2; hashed levels (x * 1 ^ y * 2654435761 ^ z * 805459861) mod T. The
    per-axis products, their mod T (a mask, which XOR commutes with) and the level's row offset
    (``level_offsets``) are int64; only those finished per-axis rows, each below ``sum(grid.rows)``, are
    narrowed to ``index_dtype(grid)`` for the sum or XOR of the three axes (2-3x faster in int32). The
    hash mod T = 2^k sees only the low k bits of each vertex coordinate, so vertices T cells apart along
    one axis always share a row (at the 162-D preset's finest xyz level, 2^22 cells of 9.5 cm = 400 km):
    a property of Instant-NGP's hash, not of the integer width. u = 1 falls in the last cell (floor
    res - 2), with weight 1 on the last vertex, instead of reading past the level. Samples stay innermost
    throughout, so every broadcast over levels and corners runs along contiguous B-long rows (on CPU 2-15x
    faster per op than with the 8 corners innermost, where each inner loop is 2 elements long).

    Args: grid; unit (B, 3) float64 in [0, 1], or (G, 3, B) for G grids of this shape; valid (B,) or
    (G, B) bool, False rows get zero weights (None: all valid); constants from ``_level_constants``
    (built when None); dtype of the weights.
    Returns index (L, 8, B) (or (G, L, 8, B)) of ``index_dtype(grid)`` and weights of the same shape.
    """
    if unit.dim() == 2:
        index, weights = corner_indices(grid, unit.T.contiguous()[None], None if valid is None else valid[None],
                                        constants, dtype)
        return index[0], weights[0]
    device = unit.device
    if constants is None:
        constants = {name: value.to(device) for name, value in _level_constants(grid).items()}
    n_direct, levels, (grids, _, batch) = sum(grid.direct), grid.levels, unit.shape
    # One part in 2^50 less than each scale: u = 1 then lands in the last cell (floor <= res - 2) with weight
    # ~1 on the last vertex, and no per-level clamp is needed (positions move by < 2e-7 of a finest cell).
    scale = torch.tensor(grid.scales, dtype=torch.float64, device=device) * (1 - 2.0 ** -50)       # (L,)
    pos = scale[:, None, None] * unit[:, None]                                           # (G, L, 3, B), >= 0
    floor = pos.floor()
    frac = torch.sub(pos, floor, out=torch.empty(pos.shape, dtype=dtype, device=device))
    pair = torch.empty(grids, levels, 2, 3, batch, dtype=dtype, device=device)           # lower, upper vertex
    upper = torch.mul(frac, -2, out=pair[:, :, 1]).add_(3).mul_(frac).mul_(frac)         # smoothstep 3f^2 - 2f^3
    torch.sub(1, upper, out=pair[:, :, 0])                                               # (in place: no temporaries)
    wx, wy, wz = pair.unbind(dim=3)                                                      # 3 x (G, L, 2, B)
    if valid is not None:
        wx = wx * valid[:, None, None]
    weights = torch.empty(grids, levels, 2, 2, 2, batch, dtype=dtype, device=device)
    torch.mul((wx[:, :, :, None] * wy[:, :, None, :])[:, :, :, :, None], wz[:, :, None, None], out=weights)
    coefficients = constants["coefficients"][:, :, None]                                 # (L, 3, 1)
    lower = floor.long().mul_(coefficients)                                              # (G, L, 3, B) int64
    terms = torch.empty(grids, levels, 2, 3, batch, dtype=index_dtype(grid), device=device)  # lower, upper vertex
    for vertex in range(2):
        if vertex:
            lower += coefficients                                                        # the upper vertex's
        terms[:, :n_direct, vertex] = lower[:, :n_direct]                                # below res^3 <= T
        torch.bitwise_and(lower[:, n_direct:], grid.table_size - 1, out=terms[:, n_direct:, vertex])  # mod T
    terms[:, :, :, 0] += constants["offsets"][:, None, None]
    tx, ty, tz = terms.unbind(dim=3)                                                     # 3 x (G, L, 2, B)
    index = torch.empty(grids, levels, 2, 2, 2, batch, dtype=tx.dtype, device=device)
    for part, combine in ((slice(0, n_direct), torch.add), (slice(n_direct, levels), torch.bitwise_xor)):
        combine(combine(tx[:, part, :, None, None], ty[:, part, None, :, None]), tz[:, part, None, None, :],
                out=index[:, part])
    return index.view(grids, levels, 8, batch), weights.view(grids, levels, 8, batch)


class HashGrid(nn.Module):
    """One multiresolution 3-D hash grid's state (Instant-NGP): a single feature-major (F, R) table for every
    level, and its int64 index constants. ``Earth4D`` encodes the grids of one shape together."""

    def __init__(self, grid: GridConfig, init_range: float, generator: torch.Generator):
        super().__init__()
        self.grid = grid
        self.embeddings = nn.Parameter(torch.empty(grid.features_per_level, sum(grid.rows)).uniform_(
            -init_range, init_range, generator=generator))
        for name, value in _level_constants(grid).items():
            self.register_buffer(name, value, persistent=False)


GRID_GROUPS = {"spatial": ("xyz",), "temporal": ("xyt", "yzt", "xzt")}  # grids of one GridConfig, output order


class Earth4D(nn.Module):
    """Earth4D (DeepEarth) over Instant-NGP hash grids (Müller et al. 2022, arXiv 2201.05989).

    Tables are drawn from U(-init_range, init_range) with a generator seeded by ``seed``, grid by grid in
    the order xyz, xyt, yzt, xzt, so the same config and seed give the same bytes on any device.

    Args (forward): coords (..., 4) of (lat deg, lon deg, elevation m, t_norm), float32 or float64.
    Returns (..., output_dim) [xyz | xyt | yzt | xzt] in the tables' dtype; gradients reach the tables only.
    """

    def __init__(self, config: Earth4DConfig, seed: int):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        self.grids = nn.ModuleDict({name: HashGrid(config.grid(name), config.init_range, generator)
                                    for name in GRID_AXES})

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        lead = coords.shape[:-1]
        with torch.autocast(coords.device.type, enabled=False):
            unit, valid = normalize_coordinates(coords.reshape(-1, coords.shape[-1]), self.config)  # (B, 4)
            unit, valid = unit.T.contiguous(), valid.T                                      # (4, B)
            out = []
            for shape, names in GRID_GROUPS.items():
                grids = [self.grids[name] for name in names]
                axes = torch.tensor([GRID_AXES[name] for name in names], device=unit.device)   # (G, 3)
                group_valid = valid[axes].all(dim=1) if self.config.out_of_domain == "zero" else None  # (G, B)
                constants = {"coefficients": grids[0].coefficients, "offsets": grids[0].offsets}
                index, weights = corner_indices(getattr(self.config, shape), unit[axes], group_valid, constants,
                                                grids[0].embeddings.dtype)                  # (G, L, 8, B)
                out.append(_GatherBlend.apply(index, weights, *(grid.embeddings for grid in grids)))
        return torch.cat(out, dim=1).reshape(*lead, self.output_dim)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def table_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())


def encode_per_level(encoder: Earth4D, coords: torch.Tensor) -> torch.Tensor:
    """The same features as ``encoder(coords)`` by a plain loop over grids and levels.

    The readable statement of the algorithm, and the baseline the vectorised path is tested and
    benchmarked against: per level, the 8 corners' rows and weights, one gather of (B, 8) rows through
    autograd and a weighted sum. Args: coords (B, 4). Returns (B, D).
    """
    unit, valid = normalize_coordinates(coords, encoder.config)
    out = []
    for grid_module, axes in zip(encoder.grids.values(), GRID_AXES.values()):
        grid, table = grid_module.grid, grid_module.embeddings
        grid_unit, grid_valid = unit[:, axes], valid[:, axes].all(dim=1)
        for scale, res, offset, direct in zip(grid.scales, grid.resolutions, level_offsets(grid), grid.direct):
            pos = grid_unit * scale                                                   # (B, 3)
            cell = pos.floor().long().clamp(max=res - 2)
            frac = pos - cell
            upper = (frac * frac * (3 - 2 * frac)).to(table.dtype)
            rows, weights = [], []
            for corner in range(8):
                bits = [(corner >> 2) & 1, (corner >> 1) & 1, corner & 1]
                vertex = [cell[:, d] + bits[d] for d in range(3)]
                if direct:
                    rows.append(vertex[0] + vertex[1] * res + vertex[2] * res * res)
                else:
                    rows.append((vertex[0] * PRIMES[0] ^ vertex[1] * PRIMES[1] ^ vertex[2] * PRIMES[2])
                                % grid.table_size)
                weight = grid_valid.to(table.dtype)
                for d in range(3):
                    weight = weight * (upper[:, d] if bits[d] else 1 - upper[:, d])
                weights.append(weight)
            corners = table[:, offset + torch.stack(rows, dim=1)]                   # (F, B, 8)
            out.append((corners * torch.stack(weights, dim=1)).sum(dim=2).T)        # (B, F)
    return torch.cat(out, dim=1)
