"""Earth4D's configuration: grids, presets and constants, without torch (params validation stays fast).

The encoder itself is terrapipe.models.earth4d, which re-exports everything here.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from terrapipe.errors import ConfigError

WGS84_A = 6378137.0                 # semi-major axis, m
WGS84_F = 1.0 / 298.257223563       # flattening
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
PRIMES = (1, 2654435761, 805459861)  # Instant-NGP's per-axis hash primes
GRID_AXES = {"xyz": (0, 1, 2), "xyt": (0, 1, 3), "yzt": (1, 2, 3), "xzt": (0, 2, 3)}  # columns of the unit cube
HOURS_PER_YEAR = 365.25 * 24
MAX_RESOLUTION = 2 ** 31  # keeps vertex * prime below 2^63


class GridConfig(BaseModel):
    """One 3-D hash grid: L levels growing geometrically from base to finest vertices per axis."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    levels: int = Field(ge=1)
    features_per_level: int = Field(ge=1)
    log2_table_size: int = Field(ge=1, le=30)
    base_resolution: int = Field(ge=2)
    finest_resolution: int = Field(ge=2, le=MAX_RESOLUTION)

    @model_validator(mode="after")
    def _finest_not_below_base(self):
        if self.finest_resolution < self.base_resolution:
            raise ValueError(f"finest_resolution {self.finest_resolution} is below base_resolution "
                             f"{self.base_resolution}")
        if self.levels == 1 and self.finest_resolution != self.base_resolution:
            raise ValueError("a single level needs finest_resolution == base_resolution")
        return self

    @property
    def table_size(self) -> int:
        """T: the row cap of a hashed level."""
        return 2 ** self.log2_table_size

    @property
    def growth(self) -> float:
        """Per-level scale factor s = 2^(log2(finest / base) / (L - 1)), as the original recomputes it."""
        if self.levels == 1:
            return 1.0
        return 2.0 ** (math.log2(self.finest_resolution / self.base_resolution) / (self.levels - 1))

    @property
    def scales(self) -> tuple[float, ...]:
        """Grid scale of each level: u in [0, 1] maps to pos = u * scale, so scale cells per axis."""
        return tuple(self.base_resolution * self.growth ** level - 1.0 for level in range(self.levels))

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Vertices per axis of each level: ceil(scale) + 1, i.e. base * s^l for integer s^l (the ceil
        ignores float error below 1e-9, so 19.000000000000004 cells are 19)."""
        return tuple(math.ceil(scale - 1e-9) + 1 for scale in self.scales)

    @property
    def direct(self) -> tuple[bool, ...]:
        """Whether each level indexes row-major (all res^3 vertices fit the table) rather than hashing."""
        return tuple(res ** 3 <= self.table_size for res in self.resolutions)

    @property
    def rows(self) -> tuple[int, ...]:
        """Table rows of each level: min(T, res^3)."""
        return tuple(min(self.table_size, res ** 3) for res in self.resolutions)

    @property
    def output_dim(self) -> int:
        return self.levels * self.features_per_level

    def parameter_count(self) -> int:
        return sum(self.rows) * self.features_per_level


class Earth4DConfig(BaseModel):
    """The whole encoder: the xyz grid, one shape shared by the xyt/yzt/xzt grids, and the coordinate map.

    out_of_domain decides what a row outside the domain gets (see ``normalize_coordinates``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    spatial: GridConfig
    temporal: GridConfig
    ecef_scale_m: float = Field(6.4e6, gt=0)
    time_margin: float = Field(0.9, gt=0, le=1)
    init_range: float = Field(0.1, ge=0)
    out_of_domain: Literal["error", "zero", "clamp"] = "error"

    @classmethod
    def preset(cls, name: str, **overrides) -> Earth4DConfig:
        """A named preset (``PRESETS``), optionally with top-level fields replaced (validated)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown Earth4D preset {name!r}; accepted: {', '.join(PRESETS)}")
        return cls.model_validate({**PRESETS[name].model_dump(), **overrides})

    def grid(self, name: str) -> GridConfig:
        return self.spatial if name == "xyz" else self.temporal

    @property
    def output_dim(self) -> int:
        return sum(self.grid(name).output_dim for name in GRID_AXES)

    def parameter_count(self) -> int:
        """Table parameters, from the config alone (nothing is allocated)."""
        return sum(self.grid(name).parameter_count() for name in GRID_AXES)

    def table_bytes(self, bytes_per_value: int = 4) -> int:
        """Table memory: rows * F * bytes per value (4 for fp32)."""
        return self.parameter_count() * bytes_per_value

    def describe(self, time_span_years: float = 200.0) -> list[dict]:
        """Per grid and level: vertices per axis, rows, direct or hashed, and the cell size.

        Spatial cells are 2 * ecef_scale_m / scale (the cube spans 12,800 km per axis at the default scale);
        a time cell is time_span_years / (time_margin * scale), t_norm 0..1 covering ``time_span_years``
        (DeepEarth: 1900-2100) and occupying time_margin of the unit axis. Returns one dict per level.
        """
        out = []
        for name in GRID_AXES:
            grid = self.grid(name)
            for level, (scale, res, rows, direct) in enumerate(zip(grid.scales, grid.resolutions, grid.rows,
                                                                   grid.direct)):
                out.append({"grid": name, "level": level, "resolution": res, "rows": rows,
                            "index": "direct" if direct else "hashed",
                            "cell_km": 2 * self.ecef_scale_m / 1000 / scale,
                            "cell_hours": (time_span_years * HOURS_PER_YEAR / (self.time_margin * scale)
                                           if name != "xyz" else None)})
        return out


PRESETS: dict[str, Earth4DConfig] = {
    # DeepEarth's Earth4D() defaults of Sept 2025: 48 + 3 * 38 = 162-D, 197,954,560 parameters (755 MB fp32).
    "deepearth_162d": Earth4DConfig(
        spatial=GridConfig(levels=24, features_per_level=2, log2_table_size=22, base_resolution=16,
                           finest_resolution=16 * 2 ** 23),
        temporal=GridConfig(levels=19, features_per_level=2, log2_table_size=18, base_resolution=8,
                            finest_resolution=8 * 2 ** 18)),
    # CPU training: xyz cells 853 km -> 390 m (the sample world is km-scale); spatiotemporal 1,829 km -> 50 km
    # and 32 years -> 0.87 years (AlphaEarth is annual); 24 + 3 * 12 = 60-D, 2,788,352 parameters (11.2 MB).
    "cpu": Earth4DConfig(
        spatial=GridConfig(levels=12, features_per_level=2, log2_table_size=16, base_resolution=16,
                           finest_resolution=16 * 2 ** 11),
        temporal=GridConfig(levels=6, features_per_level=2, log2_table_size=16, base_resolution=8,
                            finest_resolution=8 * 2 ** 5)),
}
