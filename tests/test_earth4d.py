"""Earth4D hash encoder: features against a brute-force float64 loop, gradients, int64 index arithmetic at
the finest levels (the original's uint32 bug reproduced to show the check catches it), hash collision
rates, ECEF, out-of-domain policies, determinism and the 162-D preset's parameter budget."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from terrapipe.errors import ConfigError
from terrapipe.models.earth4d import (
    GRID_AXES,
    PRESETS,
    CoordinateDomainError,
    Earth4D,
    Earth4DConfig,
    GridConfig,
    corner_indices,
    encode_per_level,
    index_dtype,
    level_offsets,
    normalize_coordinates,
    wgs84_to_ecef,
)

A, INV_F = 6378137.0, 298.257223563
PRIMES = (1, 2654435761, 805459861)

# Both direct and hashed levels in each grid; the temporal grid's growth sqrt(5) is not an integer.
SMALL = Earth4DConfig(
    spatial=GridConfig(levels=4, features_per_level=2, log2_table_size=10, base_resolution=4, finest_resolution=32),
    temporal=GridConfig(levels=3, features_per_level=2, log2_table_size=9, base_resolution=4, finest_resolution=20))


def random_coords(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(np.stack([rng.uniform(-90, 90, n), rng.uniform(-180, 180, n), rng.uniform(-400, 5000, n),
                                  rng.uniform(0, 1, n)], axis=1), dtype=dtype)


def brute_force(config: Earth4DConfig, tables: dict[str, np.ndarray], coords: np.ndarray) -> np.ndarray:
    """Per sample, grid, level and corner with Python integers (no overflow possible) and float64."""
    e2 = (2 - 1 / INV_F) / INV_F
    out = []
    for lat, lon, elev, t in coords.tolist():
        phi, lam = math.radians(lat), math.radians(lon)
        n = A / math.sqrt(1 - e2 * math.sin(phi) ** 2)
        ecef = ((n + elev) * math.cos(phi) * math.cos(lam), (n + elev) * math.cos(phi) * math.sin(lam),
                (n * (1 - e2) + elev) * math.sin(phi))
        unit = [(v / config.ecef_scale_m + 1) / 2 for v in ecef] + [((2 * t - 1) * config.time_margin + 1) / 2]
        row = []
        for name, axes in GRID_AXES.items():
            grid = config.spatial if name == "xyz" else config.temporal
            table_size = 2 ** grid.log2_table_size
            growth = 2 ** (math.log2(grid.finest_resolution / grid.base_resolution) / (grid.levels - 1))
            scales = [grid.base_resolution * growth ** level - 1 for level in range(grid.levels)]
            resolutions = [math.ceil(scale - 1e-9) + 1 for scale in scales]
            hashed = [res ** 3 > table_size for res in resolutions]
            offsets, start = {}, 0   # the documented layout: hashed levels first (j * T), then direct ones
            for level in [lv for lv in range(grid.levels) if hashed[lv]] + [lv for lv in range(grid.levels)
                                                                             if not hashed[lv]]:
                offsets[level] = start
                start += table_size if hashed[level] else resolutions[level] ** 3
            for level, (scale, res) in enumerate(zip(scales, resolutions)):
                pos = [unit[a] * scale for a in axes]
                cell = [min(math.floor(p), res - 2) for p in pos]
                smooth = [(p - c) ** 2 * (3 - 2 * (p - c)) for p, c in zip(pos, cell)]
                feature = np.zeros(grid.features_per_level)
                for bits in itertools.product((0, 1), repeat=3):
                    v = [c + b for c, b in zip(cell, bits)]
                    if hashed[level]:
                        index = (v[0] * PRIMES[0] ^ v[1] * PRIMES[1] ^ v[2] * PRIMES[2]) % table_size
                    else:
                        index = v[0] + v[1] * res + v[2] * res * res
                    weight = math.prod(s if b else 1 - s for s, b in zip(smooth, bits))
                    feature += weight * tables[name][offsets[level] + index]
                row.extend(feature)
        out.append(row)
    return np.array(out)


def tables_of(encoder: Earth4D) -> dict[str, np.ndarray]:
    return {name: grid.embeddings.detach().double().numpy().T for name, grid in encoder.grids.items()}  # (R, F)


def test_features_match_brute_force_loop_and_per_level_reference():
    encoder = Earth4D(SMALL, seed=1)
    assert any(SMALL.spatial.direct) and not all(SMALL.spatial.direct)
    assert any(SMALL.temporal.direct) and not all(SMALL.temporal.direct)
    coords = random_coords(60)
    expected = brute_force(SMALL, tables_of(encoder), coords.numpy())
    fast = encoder(coords)
    assert fast.shape == (60, SMALL.output_dim) and fast.dtype == torch.float32
    np.testing.assert_allclose(fast.detach().double().numpy(), expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(encode_per_level(encoder, coords).detach().double().numpy(), expected, atol=1e-6,
                               rtol=0)
    # float32 input and leading dimensions give the same features
    torch.testing.assert_close(encoder(coords.float().reshape(6, 10, 4)).reshape(60, -1), fast,
                               atol=1e-6, rtol=0)


def test_cpu_preset_matches_per_level_reference_features_and_gradients():
    encoder = Earth4D(Earth4DConfig.preset("cpu"), seed=0)
    coords = random_coords(300, seed=4, dtype=torch.float32)
    weights = torch.randn(300, encoder.output_dim, generator=torch.Generator().manual_seed(0))

    def forward_backward(encode):
        encoder.zero_grad(set_to_none=True)
        out = encode(coords)
        (out * weights).sum().backward()
        return out.detach(), [grid.embeddings.grad.clone() for grid in encoder.grids.values()]

    fast, fast_grads = forward_backward(encoder)
    loop, loop_grads = forward_backward(lambda c: encode_per_level(encoder, c))
    torch.testing.assert_close(fast, loop, atol=1e-6, rtol=0)
    for fast_grad, loop_grad in zip(fast_grads, loop_grads):
        assert fast_grad.abs().sum() > 0
        torch.testing.assert_close(fast_grad, loop_grad, atol=1e-5, rtol=1e-5)


def test_gradcheck_wrt_tables_float64():
    tiny = Earth4DConfig(
        spatial=GridConfig(levels=2, features_per_level=2, log2_table_size=5, base_resolution=2, finest_resolution=4),
        temporal=GridConfig(levels=2, features_per_level=1, log2_table_size=4, base_resolution=2,
                            finest_resolution=4))
    encoder = Earth4D(tiny, seed=0).double()
    coords = random_coords(6, seed=2)
    names = [f"grids.{name}.embeddings" for name in GRID_AXES]
    tables = tuple(encoder.get_parameter(name).detach().clone().requires_grad_() for name in names)

    def encode(*tables):
        return torch.func.functional_call(encoder, dict(zip(names, tables)), (coords,))

    assert torch.autograd.gradcheck(encode, tables, eps=1e-6, atol=1e-8)


def _uint32_index(cell: list[int], res: int, table_size: int) -> int:
    """The original kernel's corner index with uint32 strides (the bug fixed upstream in Oct 2025)."""
    stride, index = 1, 0
    for d in range(3):
        if stride > table_size:
            break
        index = (index + cell[d] * stride) & 0xFFFFFFFF
        stride = (stride * res) & 0xFFFFFFFF
    if stride > table_size:
        index = 0
        for d in range(3):
            index ^= (cell[d] * PRIMES[d]) & 0xFFFFFFFF
    return index % table_size


def _vertex_points(grid: GridConfig, level: int, cells: np.ndarray) -> torch.Tensor:
    """Unit-cube points whose floor cell at ``level`` is ``cells`` (n, 3)."""
    return torch.tensor((cells + 0.5) / grid.scales[level], dtype=torch.float64)


@pytest.mark.parametrize("axis_change", ["z_by_one_cell", "y_high_bit"])
def test_finest_levels_keep_every_axis(axis_change):
    """At every xyz level of the 162-D preset, two points that differ only in z (one cell) or only in the top
    bit of y that the level resolves (below log2 T on hashed levels: the hash mod 2^k is periodic in T along
    each axis) get different rows; uint32 strides drop z at levels 7 and 12-18 and y's high bits at 12-18."""
    grid = PRESETS["deepearth_162d"].spatial
    rng = np.random.default_rng(0)
    buggy_levels = []
    for level, (res, direct) in enumerate(zip(grid.resolutions, grid.direct)):
        base = rng.integers(0, res // 2 - 2, size=(64, 3))
        other = base.copy()
        if axis_change == "z_by_one_cell":
            other[:, 2] += 1
        else:
            other[:, 1] += min(res, grid.table_size) // 2
        unit = torch.cat([_vertex_points(grid, level, base), _vertex_points(grid, level, other)])
        index, _ = corner_indices(grid, unit)                                  # (L, 8, 128)
        lower = index[level, 0]
        assert (lower[:64] != lower[64:]).all(), f"level {level} ({'direct' if direct else 'hashed'}) drops an axis"
        buggy = [_uint32_index(b.tolist(), res, grid.table_size) == _uint32_index(o.tolist(), res, grid.table_size)
                 for b, o in zip(base, other)]
        if all(buggy):
            buggy_levels.append(level)
    if axis_change == "z_by_one_cell":
        assert buggy_levels == [7, 12, 13, 14, 15, 16, 17, 18]   # the reference's table of affected levels
    else:
        assert buggy_levels == [12, 13, 14, 15, 16, 17, 18]


def _python_rows(grid: GridConfig, level: int, cells: np.ndarray) -> list[list[int]]:
    """Each cell's 8 corner rows (offset included) with Python integers: no overflow, no narrowing."""
    res, offset, rows = grid.resolutions[level], level_offsets(grid)[level], []
    for cell in cells.tolist():
        corners = []
        for bits in itertools.product((0, 1), repeat=3):
            v = [c + b for c, b in zip(cell, bits)]
            if grid.direct[level]:
                corners.append(offset + v[0] + v[1] * res + v[2] * res * res)
            else:
                corners.append(offset + ((v[0] * PRIMES[0] ^ v[1] * PRIMES[1] ^ v[2] * PRIMES[2]) % grid.table_size))
        rows.append(corners)
    return rows


def test_finest_rows_equal_python_integers_though_narrowed_to_int32():
    """At the 162-D preset's finest xyz levels vertex * prime passes 2^53 (cells up to 2^23 - 1); the hash
    is formed in int64 and only the finished rows (< 2^27 here) are stored as int32."""
    grid = PRESETS["deepearth_162d"].spatial
    assert index_dtype(grid) == torch.int32 and sum(grid.rows) < 2 ** 31
    rng = np.random.default_rng(3)
    for level in (3, 4, grid.levels - 2, grid.levels - 1):      # last direct, first hashed, two finest
        res = grid.resolutions[level]
        cells = rng.integers(0, res - 1, size=(32, 3))
        index, _ = corner_indices(grid, _vertex_points(grid, level, cells))
        assert index.dtype == torch.int32
        assert index[level].T.tolist() == _python_rows(grid, level, cells)


def test_rows_stay_int64_when_a_grid_has_more_than_2_31_rows():
    grid = GridConfig(levels=3, features_per_level=1, log2_table_size=30, base_resolution=2 ** 11,
                      finest_resolution=2 ** 13)
    assert sum(grid.rows) == 3 * 2 ** 30 and index_dtype(grid) == torch.int64
    cells = np.random.default_rng(4).integers(0, 2 ** 11 - 1, size=(16, 3))
    index, _ = corner_indices(grid, _vertex_points(grid, 2, cells))
    assert index.dtype == torch.int64 and index[2].max() >= 2 ** 31
    assert index[2].T.tolist() == _python_rows(grid, 2, cells)


def test_grids_of_one_shape_computed_together_equal_one_at_a_time():
    grid = SMALL.temporal
    unit = torch.rand(3, 3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    valid = torch.rand(3, 50, generator=torch.Generator().manual_seed(7)) > 0.2
    index, weights = corner_indices(grid, unit, valid)                           # (3, L, 8, 50)
    for g in range(3):
        one_index, one_weights = corner_indices(grid, unit[g].T, valid[g])
        assert torch.equal(index[g], one_index) and torch.equal(weights[g], one_weights)
    assert (weights[~valid[:, None, None, :].expand_as(weights)] == 0).all()


def test_hash_is_periodic_in_T_along_each_axis():
    """The documented limit of XOR-prime hashing mod 2^k: vertices exactly T cells apart share a row (at the
    finest 162-D level, 400 km apart), while one cell less apart they do not."""
    grid = PRESETS["deepearth_162d"].spatial
    level = grid.levels - 1
    base = np.array([[5, 7, 9]] * 3)
    moved = base + np.array([[grid.table_size, 0, 0], [0, grid.table_size, 0], [0, 0, grid.table_size - 1]])
    index, _ = corner_indices(grid, torch.cat([_vertex_points(grid, level, base), _vertex_points(grid, level, moved)]))
    lower = index[level, 0]
    assert lower[0] == lower[3] and lower[1] == lower[4] and lower[2] != lower[5]
    assert grid.table_size / grid.scales[level] * 2 * 6400 == pytest.approx(400, rel=0.01)   # km


@pytest.mark.parametrize("which", ["spatial", "temporal"])
def test_hashed_levels_collide_at_the_random_rate(which):
    """m distinct vertices hashed into T rows fill T * (1 - (1 - 1/T)^m) rows in expectation (sampling noise
    0.2% here). T random points give m ~ T distinct lower corners per level. Within 1.5% where the vertices
    are sparse in the level (res^3 >= 16 m); within 5% on a coarse level they fill a quarter of, whose
    XOR-prime hash of a dense block is measurably (1-4%) worse than random."""
    grid = getattr(PRESETS["cpu"], which)
    unit = torch.rand(grid.table_size, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    index, _ = corner_indices(grid, unit)                                       # (L, 8, T)
    hashed = [level for level, direct in enumerate(grid.direct) if not direct]
    assert len(hashed) >= 3
    for level in hashed:
        res, offset = grid.resolutions[level], level_offsets(grid)[level]
        cell = (unit * grid.scales[level]).long()                               # (T, 3)
        vertices = len(np.unique((cell[:, 0] + res * (cell[:, 1] + res * cell[:, 2])).numpy()))
        rows = index[level, 0] - offset
        assert rows.min() >= 0 and rows.max() < grid.table_size
        expected = grid.table_size * (1 - (1 - 1 / grid.table_size) ** vertices)
        distinct = int((torch.bincount(rows, minlength=grid.table_size) > 0).sum())
        tolerance = 0.015 if res ** 3 >= 16 * vertices else 0.05
        assert abs(distinct / expected - 1) < tolerance, f"level {level}: {distinct} rows, {expected:.0f} expected"


def test_direct_levels_are_a_bijection():
    grid = SMALL.spatial
    level = 1
    res = grid.resolutions[level]
    cells = np.array(list(itertools.product(range(res - 1), repeat=3)))
    index, _ = corner_indices(grid, _vertex_points(grid, level, cells))
    assert len(torch.unique(index[level, 0])) == len(cells)


def test_cube_faces_stay_inside_each_level():
    """u = 0 and u = 1 exactly (the clamp mode's faces) read the first and last vertex of every level."""
    grid = SMALL.spatial
    unit = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    index, weights = corner_indices(grid, unit)                                   # (L, 8, 3)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(grid.levels, 3))
    for level, (res, direct, offset) in enumerate(zip(grid.resolutions, grid.direct, level_offsets(grid))):
        rows = index[level] - offset                                              # (8, 3)
        assert rows.min() >= 0 and rows.max() < grid.rows[level]
        if direct:
            assert rows[0, 0] == 0 and weights[level, 0, 0] == 1          # lower corner of cell 0
            assert rows[7, 1] == res ** 3 - 1 and weights[level, 7, 1] == pytest.approx(1, abs=1e-6)


def test_empty_batch():
    encoder = Earth4D(SMALL, seed=0)
    out = encoder(torch.zeros(0, 4))
    assert out.shape == (0, SMALL.output_dim)
    out.sum().backward()
    assert all((grid.embeddings.grad == 0).all() for grid in encoder.grids.values())


def test_wgs84_to_ecef_known_points():
    b = A * (1 - 1 / INV_F)
    lat = torch.tensor([0.0, 0.0, 90.0, 45.0], dtype=torch.float32)
    lon = torch.tensor([0.0, 90.0, 0.0, -120.0], dtype=torch.float32)
    elev = torch.tensor([0.0, 0.0, 0.0, 1234.5], dtype=torch.float32)
    ecef = wgs84_to_ecef(lat, lon, elev)
    assert ecef.dtype == torch.float64 and ecef.shape == (4, 3)
    e2 = (2 - 1 / INV_F) / INV_F
    n = A / math.sqrt(1 - e2 * 0.5)
    mid = [(n + 1234.5) * math.sqrt(0.5) * math.cos(math.radians(-120)),
           (n + 1234.5) * math.sqrt(0.5) * math.sin(math.radians(-120)), (n * (1 - e2) + 1234.5) * math.sqrt(0.5)]
    expected = torch.tensor([[A, 0, 0], [0, A, 0], [0, 0, b], mid], dtype=torch.float64)
    torch.testing.assert_close(ecef, expected, atol=1e-6, rtol=0)


def _row(lat=10.0, lon=20.0, elev=100.0, t=0.5):
    return [lat, lon, elev, t]


BAD_ROWS = {"latitude": _row(lat=95.0), "longitude": _row(lon=190.0), "t_norm": _row(t=1.5),
            "not finite": _row(elev=float("nan")), "ECEF cube": _row(lat=0.0, lon=0.0, elev=30_000.0)}


@pytest.mark.parametrize("problem", BAD_ROWS)
def test_error_mode_names_count_row_and_reason(problem):
    encoder = Earth4D(SMALL, seed=0)
    coords = torch.tensor([_row(), _row(), BAD_ROWS[problem], _row(), BAD_ROWS[problem]], dtype=torch.float64)
    with pytest.raises(CoordinateDomainError, match=rf"2 of 5 coordinate rows.*row 2 .*{problem}") as info:
        encoder(coords)
    assert isinstance(info.value, ValueError) and "Fix: clean the coordinates" in str(info.value)
    assert "out_of_domain to 'zero' or 'clamp'" in str(info.value)


def test_zero_mode_zeroes_the_grids_that_read_a_bad_axis_and_their_gradient():
    config = SMALL.model_copy(update={"out_of_domain": "zero"})
    encoder = Earth4D(config, seed=0)
    good = torch.tensor([_row()], dtype=torch.float64)
    coords = torch.tensor([_row(), _row(t=1.5), _row(lat=95.0), _row(lon=float("inf")),
                           _row(lat=0.0, lon=0.0, elev=3e4)],
                          dtype=torch.float64)
    out = encoder(coords)
    xyz = config.spatial.output_dim
    reference = encoder(good)[0]
    torch.testing.assert_close(out[0], reference)
    torch.testing.assert_close(out[1, :xyz], reference[:xyz])       # t outside: spatial features kept
    assert (out[1, xyz:] == 0).all()
    assert (out[2:4] == 0).all()                                     # geographic nonsense: every grid zero
    assert (out[4, :xyz] == 0).all()                                 # x beyond the cube: xyz, xyt, xzt zero,
    per_grid = config.temporal.output_dim                            # yzt (which does not read x) kept
    yzt = slice(xyz + per_grid, xyz + 2 * per_grid)
    assert (out[4, yzt] != 0).any() and (out[4, xyz:xyz + per_grid] == 0).all()
    assert (out[4, xyz + 2 * per_grid:] == 0).all()
    encoder.zero_grad()
    encoder(coords[2:4]).sum().backward()
    assert all((grid.embeddings.grad == 0).all() for grid in encoder.grids.values())


def test_clamp_mode_clamps_to_the_domain_and_refuses_non_finite():
    encoder = Earth4D(SMALL.model_copy(update={"out_of_domain": "clamp"}), seed=0)
    outside = torch.tensor([_row(lat=95.0), _row(lon=190.0), _row(t=1.5), _row(t=-0.5)], dtype=torch.float64)
    edges = torch.tensor([_row(lat=90.0), _row(lon=180.0), _row(t=1.0), _row(t=0.0)], dtype=torch.float64)
    torch.testing.assert_close(encoder(outside), encoder(edges))
    unit, valid = normalize_coordinates(torch.tensor([_row(lat=0.0, lon=0.0, elev=1e5)], dtype=torch.float64),
                                        encoder.config)
    assert unit[0, 0] == 1.0 and valid.all()
    with pytest.raises(CoordinateDomainError, match="1 of 1 .*not finite.*Fix: drop or repair.*clamp cannot move"):
        encoder(torch.tensor([_row(t=float("nan"))]))


def test_bad_coordinate_shape_and_dtype():
    encoder = Earth4D(SMALL, seed=0)
    with pytest.raises(ValueError, match=r"\(B, 4\).*got shape \(5, 3\)"):
        encoder(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="float32 or float64"):
        encoder(torch.zeros(5, 4, dtype=torch.int64))


def test_same_seed_same_table_bytes_and_gradients():
    first, second, other = Earth4D(SMALL, seed=7), Earth4D(SMALL, seed=7), Earth4D(SMALL, seed=8)
    for a, b, c in zip(first.parameters(), second.parameters(), other.parameters()):
        assert a.detach().numpy().tobytes() == b.detach().numpy().tobytes()
        assert not torch.equal(a, c)
        assert a.abs().max() <= SMALL.init_range
    coords = random_coords(500, seed=3)
    for encoder in (first, second):
        (encoder(coords) ** 2).sum().backward()
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_deterministic_algorithms_mode_gives_the_same_bytes():
    """The training stage turns torch.use_deterministic_algorithms on for CPU runs: nothing may refuse or change."""
    encoder = Earth4D(SMALL, seed=7)
    coords = random_coords(500, seed=3)
    results = []
    for mode in (False, True):
        previous = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(mode)
        try:
            encoder.zero_grad(set_to_none=True)
            out = encoder(coords)
            (out ** 2).sum().backward()
        finally:
            torch.use_deterministic_algorithms(previous)
        results.append([out.detach()] + [p.grad for p in encoder.parameters()])
    for plain, deterministic in zip(*results):
        assert torch.equal(plain, deterministic)


def test_autocast_does_not_touch_coordinates():
    encoder = Earth4D(SMALL, seed=0)
    coords = random_coords(20, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = encoder(coords)
    torch.testing.assert_close(inside, encoder(coords), atol=0, rtol=0)


def test_deepearth_preset_budget_from_config_alone():
    config = Earth4DConfig.preset("deepearth_162d")
    assert config.output_dim == 162
    assert config.parameter_count() == 197_954_560
    assert config.table_bytes() == 197_954_560 * 4
    assert config.spatial.direct == (True,) * 4 + (False,) * 20
    assert config.temporal.rows[:4] == (512, 4096, 32768, 262144)
    rows = config.describe()
    assert len(rows) == 24 + 3 * 19
    xyz = [r for r in rows if r["grid"] == "xyz"]
    assert xyz[0]["cell_km"] == pytest.approx(12_800 / 15) and xyz[3]["cell_km"] == pytest.approx(100.8, abs=0.1)
    assert xyz[23]["cell_km"] * 1e5 == pytest.approx(9.54, abs=0.01)      # the advertised 9.5 cm
    assert xyz[4]["index"] == "hashed" and xyz[3]["index"] == "direct" and xyz[0]["cell_hours"] is None
    finest_time = [r for r in rows if r["grid"] == "xzt"][-1]
    assert finest_time["cell_hours"] == pytest.approx(200 * 365.25 * 24 / (0.9 * 2_097_151))   # ~0.93 h
    assert finest_time["cell_hours"] == pytest.approx(0.929, abs=1e-3)


def test_module_reports_what_it_allocates():
    for config in (SMALL, PRESETS["cpu"]):
        encoder = Earth4D(config, seed=0)
        assert encoder.parameter_count() == config.parameter_count()
        assert encoder.table_bytes() == config.table_bytes() == 4 * config.parameter_count()
        assert [g.embeddings.shape for g in encoder.grids.values()] == [(2, sum(config.grid(n).rows)) for n in GRID_AXES]
        assert list(encoder.state_dict()) == [f"grids.{name}.embeddings" for name in GRID_AXES]


def test_presets_and_config_errors():
    assert Earth4DConfig.preset("cpu", out_of_domain="zero").out_of_domain == "zero"
    with pytest.raises(ConfigError, match="unknown Earth4D preset 'nope'; accepted: deepearth_162d, cpu"):
        Earth4DConfig.preset("nope")
    with pytest.raises(ValueError, match="finest_resolution 4 is below base_resolution 8"):
        GridConfig(levels=2, features_per_level=2, log2_table_size=8, base_resolution=8, finest_resolution=4)
    with pytest.raises(ValueError, match="extra"):
        Earth4DConfig.preset("cpu", typo=1)
    with pytest.raises(ValueError, match="out_of_domain"):
        Earth4DConfig.preset("cpu", out_of_domain="wrap")
