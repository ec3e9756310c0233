"""Figures for the Earth4D hash encoder: forward + backward throughput against the per-level loop and
against this machine's memory bandwidth.

    python benchmarks/bench_earth4d.py [--batches 256 1024 8192] [--threads 2] [--presets default cpu deepearth_162d]

In one process, for each config ("default": the encoder params.yaml's earth4d section trains, i.e. the cpu
preset with its overrides; "cpu"; "deepearth_162d", the seed's layout, at the largest batch only) and batch
(256 is what the default experiment trains with):
  - samples/s of forward + backward (gradients w.r.t. the tables) of the vectorised encoder beside
    ``encode_per_level`` (a per-level PyTorch loop computing the same features) on the same batch, their
    steps interleaved in rounds so both see the same load: the ratio of the best steps (target >= 5 at
    the "cpu" preset; >= 100k samples/s there), and of the median steps; beside them the best process
    CPU time per step of each, summed over threads (time slices lost to other processes do not count in
    it, caches shared with them still do);
  - table bytes touched per second, 8 corners x levels x F x 4 B per sample for the gather plus the same
    for the scatter, beside the memory bandwidth of a 256 MB numpy copy (read + write) measured here, and
    the same counted in whole 64 B cache lines (the traffic if no access hit cache): how far the encoder
    is from the limit of a gather-bound kernel;
  - on a GPU (when one is visible) the same, with the per-level loop, synchronised.
The load average is printed first and last: other processes on a 2-core machine slow both paths, the
threaded vectorised one most.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def copy_bandwidth(megabytes: int = 256, rounds: int = 5) -> float:
    """Bytes per second moved by a large numpy copy (each byte read once and written once)."""
    src = np.ones(megabytes * 2 ** 20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def world_coords(batch: int, seed: int, device: torch.device) -> torch.Tensor:
    """Random (lat, lon, elevation, t_norm) rows over the whole globe, uniform on the sphere."""
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, batch)))
    rows = np.stack([lat, rng.uniform(-180, 180, batch), rng.uniform(-100, 4000, batch), rng.uniform(0, 1, batch)], 1)
    return torch.tensor(rows, dtype=torch.float32, device=device)


def timed_steps(paths: dict, encoder, coords: torch.Tensor, rounds: int, steps_per_round: dict) -> tuple[dict, dict]:
    """Wall and process-CPU seconds per forward + backward step of each path: ``rounds`` rounds, each
    running every path in turn for its ``steps_per_round``, so that all paths see the same load (other
    processes on a 2-core machine slow every path, memory-bound ones most). One warm-up step first for
    each path whose steps_per_round exceeds 1 (the per-level loop at the 162-D preset takes tens of seconds
    a step, dominated by one full-table gradient per level; a warm-up would double that for a negligible
    first-call cost). The step is a fixed random projection of the features, as a linear layer on top
    would see them."""
    projection = torch.randn(encoder.output_dim, generator=torch.Generator().manual_seed(0)).to(coords.device)

    def step(encode):
        (encode(coords) @ projection).sum().backward()
        encoder.zero_grad(set_to_none=True)
        if coords.is_cuda:
            torch.cuda.synchronize()

    for name, encode in paths.items():
        if steps_per_round[name] > 1:
            step(encode)
    seconds = {name: [] for name in paths}
    cpu_seconds = {name: [] for name in paths}
    for _ in range(rounds):
        for name, encode in paths.items():
            for _ in range(steps_per_round[name]):
                start, cpu_start = time.perf_counter(), time.process_time()
                step(encode)
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.process_time() - cpu_start)
    return seconds, cpu_seconds


def encoder_config(name: str):
    """A preset by name, or "default": the encoder of params.yaml's earth4d section (the preset plus overrides)."""
    from terrapipe.models.earth4d import Earth4DConfig

    if name != "default":
        return Earth4DConfig.preset(name)
    from terrapipe.config import load_params
    from terrapipe.train.alphaearth import earth4d_params

    return earth4d_params(load_params(REPO / "params.yaml")).encoder_config()


def measure(preset: str, batch: int, device: torch.device, rounds: int, fast_steps: int, loop_steps: int,
            bandwidth: float | None) -> None:
    from terrapipe.models.earth4d import Earth4D, encode_per_level

    config = encoder_config(preset)
    encoder = Earth4D(config, seed=0).to(device)
    coords = world_coords(batch, seed=1, device=device)
    levels = config.spatial.levels + 3 * config.temporal.levels
    touched = 2 * 8 * config.output_dim * 4   # bytes per sample: 8 corners x (levels x F) fp32, gather + scatter
    seconds, cpu_seconds = timed_steps({"fast": encoder, "loop": lambda c: encode_per_level(encoder, c)}, encoder,
                                       coords, rounds, {"fast": fast_steps, "loop": loop_steps})
    best = {name: batch / min(times) for name, times in seconds.items()}
    median = {name: batch / float(np.median(times)) for name, times in seconds.items()}
    cpu = {name: 1e3 * min(times) for name, times in cpu_seconds.items()}
    fast = best["fast"]
    print(f"{preset} on {device.type}: {config.output_dim}-D, {config.parameter_count():,} parameters "
          f"({config.table_bytes() / 2 ** 20:.0f} MiB), {levels} levels, batch {batch}, "
          f"{len(seconds['fast'])} vectorised and {len(seconds['loop'])} loop steps in {rounds} interleaved rounds")
    print(f"  vectorised forward+backward: {fast:,.0f} samples/s | per-level loop {best['loop']:,.0f} samples/s | "
          f"ratio {fast / best['loop']:.1f} (best step of each; medians {median['fast']:,.0f} and "
          f"{median['loop']:,.0f}, ratio {median['fast'] / median['loop']:.1f})")
    print(f"  process CPU time per step, all threads (immune to time slicing, not to cache sharing): vectorised "
          f"{cpu['fast']:.1f} ms, loop {cpu['loop']:.1f} ms, ratio {cpu['loop'] / cpu['fast']:.1f} (best of each)")
    line = f"  table bytes touched: {fast * touched / 1e9:.2f} GB/s ({touched} B per sample)"
    if bandwidth:
        line += (f" = {fast * touched / bandwidth:.3f} of the {bandwidth / 1e9:.1f} GB/s copy bandwidth; as whole "
                 f"64 B cache lines (every 4 B access missing cache) {16 * fast * touched / bandwidth:.2f}")
    print(line, flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 8192])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--presets", nargs="+", default=["default", "cpu", "deepearth_162d"])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    bandwidth = copy_bandwidth()
    print(f"baseline: numpy copy bandwidth (256 MB, read + write) = {bandwidth / 1e9:.1f} GB/s", flush=True)
    cpu = torch.device("cpu")
    for preset in args.presets:
        if preset == "deepearth_162d":  # a loop step takes tens of seconds: one round at the largest batch
            measure(preset, max(args.batches), cpu, rounds=1, fast_steps=3, loop_steps=1, bandwidth=bandwidth)
            continue
        for batch in args.batches:
            measure(preset, batch, cpu, rounds=6, fast_steps=3, loop_steps=1, bandwidth=bandwidth)
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        print(f"GPU {torch.cuda.get_device_name()}")
        for preset in args.presets:
            measure(preset, max(args.batches) * 8, gpu, rounds=3, fast_steps=10, loop_steps=1, bandwidth=None)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
