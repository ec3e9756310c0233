"""Figures for issue 8: pretraining throughput of the default experiment on this machine.

    python benchmarks/bench_pretrain.py [--experiment KEY] [--steps 20] [--size cpu]

Needs the processed store (`make demo` or `dvc repro normalize_sentinel normalize_era5`). In one process:
  - the fp32 matmul peak of this machine (1024 x 1024 x 1024, all threads torch uses), the baseline;
  - samples/s and tokens/s (encoded + decoded tokens, both views) of `--steps` training steps at the
    experiment's size, after 2 warm-up steps;
  - FLOPs of one training step (forward + backward, counted by torch.utils.flop_counter), so achieved
    FLOP/s / peak (target >= 0.25 on CPU);
  - the share of step time spent waiting for the next batch (target < 0.10);
  - the top operators of a torch.profiler trace of 3 steps: what bounds the step;
  - on a GPU (when one is visible): the same at --gpu-size in bf16 autocast against the bf16 matmul peak.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def matmul_peak(device: torch.device, dtype=torch.float32, n: int = 1024, rounds: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(rounds):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / rounds)
    return 2 * n ** 3 / best


def measure(config, arrays, train_rows, device, steps: int, bf16: bool) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from terrapipe.models.latent_mim import LatentMIM
    from terrapipe.train.batch import assemble, global_rows, step_shape
    from terrapipe.train.loop import Prefetcher, build_optimizer
    from terrapipe.train.objective import Objective, token_counts

    torch.manual_seed(0)
    model = LatentMIM(config).to(device).train()
    objective = Objective(model)
    optimizer, _ = build_optimizer(model, config)
    micro, global_batch = config.train.microbatch, config.train.global_batch
    months, chip = arrays["timestamps"].shape[1], arrays[config.mix.encode[0]].shape[1]

    def make(step, m):
        rows = global_rows(config, train_rows, step)[m * micro:(m + 1) * micro]
        ids = step * global_batch + np.arange(m * micro, (m + 1) * micro)
        return assemble(config, arrays, rows, ids, step, step_shape(config, step, months, chip))

    n_micro = global_batch // micro
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step_fn(batches):
        tokens = 0
        for batch in batches:
            batch = batch.to(device)
            with autocast:
                loss, _ = objective(batch, torch.Generator().manual_seed(0))
            (loss / n_micro).backward()
            tokens += sum(token_counts(batch))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return tokens

    warm = [make(s, m) for s in range(2) for m in range(n_micro)]
    for s in range(2):
        step_fn(warm[s * n_micro:(s + 1) * n_micro])
    counter = FlopCounterMode(display=False)
    flop_batches = [make(2, m) for m in range(n_micro)]
    with counter:
        step_fn(flop_batches)
    flops_per_step = counter.get_total_flops()
    loader = Prefetcher(make, ((s, m) for s in range(3, 3 + steps) for m in range(n_micro)))
    start, tokens, pending, times = time.perf_counter(), 0, [], []
    for (_s, m), batch in loader:
        pending.append(batch)
        if m == n_micro - 1:
            t0 = time.perf_counter()
            tokens += step_fn(pending)
            times.append(time.perf_counter() - t0)
            pending = []
    elapsed = time.perf_counter() - start
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for s in range(3):
            step_fn([make(100 + s, m) for m in range(n_micro)])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return {"samples_per_s": steps * global_batch / elapsed, "tokens_per_s": tokens / elapsed,
            "step_s": elapsed / steps, "flops_per_step": flops_per_step,
            "achieved_flops": flops_per_step * steps / elapsed, "data_wait_share": loader.wait_s / elapsed,
            "profile": prof.key_averages().table(sort_by=sort, row_limit=12)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default=None, help="default: the first of pretrain.run")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--gpu-size", default="base_shallow_decoder")
    args = parser.parse_args(argv)

    from terrapipe.data.store import TrainingStore
    from terrapipe.portable import pin_cpu_kernels
    from terrapipe.train.experiments import load_pretrain, resolve

    print(f"kernels as the stages run them: {pin_cpu_kernels()}")   # before any tensor work
    params = load_pretrain(REPO / "params.yaml")
    key = args.experiment or params.run[0]
    config = resolve(params, key)
    store = TrainingStore(REPO / "data/processed/sentinel", REPO / "data/processed/era5")
    cpu = torch.device("cpu")
    peak = matmul_peak(cpu)
    print(f"experiment {key}, size {config.model.size}, global batch {config.train.global_batch}, "
          f"microbatch {config.train.microbatch}, torch threads {torch.get_num_threads()}")
    print(f"baseline: fp32 matmul peak (1024^3) = {peak / 1e9:.1f} GFLOP/s")
    result = measure(config, store.arrays, store.indices("train"), cpu, args.steps, bf16=False)
    print(f"CPU fp32: {result['samples_per_s']:.1f} samples/s, {result['tokens_per_s']:.0f} tokens/s, "
          f"{result['step_s']:.3f} s/step, {result['flops_per_step'] / 1e9:.2f} GFLOP/step")
    print(f"achieved {result['achieved_flops'] / 1e9:.1f} GFLOP/s = {result['achieved_flops'] / peak:.3f} of the "
          "fp32 matmul peak (target >= 0.25)")
    print(f"data wait share of step time: {result['data_wait_share']:.3f} (target < 0.10)")
    print("profile (3 steps), top operators by self time:\n" + result["profile"])
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        big = config.model_copy(update={"model": config.model.model_copy(update={"size": args.gpu_size})})
        gpu_peak = matmul_peak(gpu, torch.bfloat16, n=8192, rounds=10)
        res = measure(big, store.arrays, store.indices("train"), gpu, args.steps, bf16=True)
        print(f"GPU {torch.cuda.get_device_name()} size {args.gpu_size} bf16: {res['samples_per_s']:.1f} samples/s, "
              f"{res['tokens_per_s']:.0f} tokens/s, achieved {res['achieved_flops'] / 1e12:.2f} TFLOP/s = "
              f"{res['achieved_flops'] / gpu_peak:.3f} of the bf16 matmul peak {gpu_peak / 1e12:.1f} TFLOP/s, "
              f"data wait {res['data_wait_share']:.3f}")
        print(res["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
