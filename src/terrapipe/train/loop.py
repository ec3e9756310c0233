"""The pretraining loop: AdamW, linear warmup + cosine, gradient clipping, non-finite step skipping,
atomic checkpoints and exact resume, on one process or under torchrun (DDP, gloo on CPU, NCCL on GPU).

Every random draw is a function of (seed, step, sample or microbatch index) (train/batch.py), so
resuming from a checkpoint, or splitting the global batch over ranks, replays exactly the draws of one
uninterrupted run. A step's global batch is ``global_batch / microbatch`` microbatches; rank r takes
microbatches r, r + world, ...; each microbatch's loss is divided by the number of microbatches on the
rank, and DDP averages over ranks, so the gradient equals a single process accumulating all of them.
"""
from __future__ import annotations

import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from terrapipe.train.batch import assemble, global_rows, step_shape
from terrapipe.train.experiments import ExperimentConfig

CHECKPOINT = "checkpoint.pt"


def lr_factor(step: int, steps: int, warmup: int, final_ratio: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine from 1 to ``final_ratio`` at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup - 1, 1)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """torchrun sets RANK / WORLD_SIZE: join the process group (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def select_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from terrapipe.errors import ConfigError
            raise ConfigError("train.device is cuda but no CUDA device is visible; use auto or cpu")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@dataclass
class RunResult:
    history: list[dict] = field(default_factory=list)    # deterministic per-step metrics (checkpointed, DVC)
    timing: list[dict] = field(default_factory=list)     # samples/s, tokens/s, data wait: this machine's speed
    skipped_steps: int = 0
    evaluations: list[dict] = field(default_factory=list)  # the downstream callback's points (step, metric)
    data_wait_s: float = 0.0
    step_s: float = 0.0


class Prefetcher:
    """Assemble the next microbatches in a background thread (numpy slicing and masking release the GIL
    for most of their time), so the model rarely waits; records how long it did wait."""

    def __init__(self, make, jobs, depth: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, args=(make, jobs), daemon=True)
        self.wait_s = 0.0
        self._thread.start()

    def _run(self, make, jobs):
        try:
            for job in jobs:
                self._queue.put((job, make(*job)))
        except BaseException as exc:  # surfaced in the training thread
            self._queue.put((None, exc))
        self._queue.put((None, None))

    def __iter__(self):
        while True:
            start = time.perf_counter()
            job, item = self._queue.get()
            self.wait_s += time.perf_counter() - start
            if isinstance(item, BaseException):
                raise item
            if job is None:
                return
            yield job, item


def build_optimizer(model, config: ExperimentConfig):
    optim = config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.train.steps, optim.warmup_steps, optim.final_lr_ratio))
    return optimizer, scheduler


def _mean_metrics(parts: list[dict], dist_info: Distributed, device) -> dict[str, float]:
    """Average microbatch metrics over the rank's microbatches, then over ranks."""
    keys = sorted({k for p in parts for k in p})
    values = torch.tensor([float(sum(float(p.get(k, 0.0)) for p in parts)) for k in keys] + [len(parts)],
                          dtype=torch.float64, device=device)
    if dist_info.enabled:
        import torch.distributed as dist
        dist.all_reduce(values)
    return {k: float(v) / float(values[-1]) for k, v in zip(keys, values[:-1])}


def train(config: ExperimentConfig, document: dict, arrays: dict, train_rows: np.ndarray, out_dir: Path, *,
          extra_state: dict | None = None, stop_at: int | None = None, progress: bool = True,
          tracker=None) -> RunResult:
    """Train (or resume) the experiment into ``out_dir``/checkpoint.pt; return the per-step history.

    Args:
        config: the resolved experiment; document: its JSON form (recorded, and compared on resume).
        arrays: store arrays [N, ...] per modality plus "timestamps" (memory maps are fine).
        train_rows: the store rows that may be trained on (held-out sites are never passed).
        extra_state: recorded in every checkpoint (band order, normalization stats).
        stop_at: stop after this many steps, as if interrupted (tests); the checkpoint is written there.
        tracker: optional callable(step_metrics) on the main rank (W&B).
    """
    from terrapipe.models.latent_mim import LatentMIM
    from terrapipe.train.checkpoint import load_checkpoint, save_checkpoint
    from terrapipe.train.objective import Objective, token_counts

    train_cfg = config.train
    device = select_device(train_cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    dist_info = init_distributed(device)
    n_micro = train_cfg.global_batch // train_cfg.microbatch
    if n_micro % dist_info.world:
        from terrapipe.errors import ConfigError
        raise ConfigError(f"train.global_batch / train.microbatch = {n_micro} microbatches cannot be split "
                          f"evenly over {dist_info.world} ranks; change the batch sizes or the rank count")
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        if train_cfg.cpu_threads is not None:
            torch.set_num_threads(train_cfg.cpu_threads)
    torch.manual_seed(train_cfg.seed)                      # the same initial parameters on every rank
    months, chip = arrays["timestamps"].shape[1], arrays[config.mix.encode[0]].shape[1]
    model = LatentMIM(config, months).to(device)
    objective = Objective(model)
    optimizer, scheduler = build_optimizer(model, config)
    result, start = RunResult(), 0
    checkpoint_path = Path(out_dir) / CHECKPOINT
    state = load_checkpoint(checkpoint_path, document, device)
    if state is not None and state["step"] >= train_cfg.steps:
        state = None  # a finished run that DVC re-runs (its code changed) trains again from the start
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        start, result.history, result.skipped_steps = state["step"], state["history"], state["skipped_steps"]
        result.evaluations = state.get("evaluations", [])
    wrapped = objective
    if dist_info.enabled:
        from torch.nn.parallel import DistributedDataParallel
        wrapped = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and train_cfg.bf16)
    mine = list(range(dist_info.rank, n_micro, dist_info.world))
    end = min(train_cfg.steps, stop_at if stop_at is not None else train_cfg.steps)
    callback = None
    if dist_info.main:
        from terrapipe import paths
        from terrapipe.train.callbacks import knn_callback
        callback = knn_callback(config, extra_state or {}, paths.task_dir(config.downstream.task))

    def make(step: int, micro: int):
        shape = step_shape(config, step, months, chip)
        rows = global_rows(config, train_rows, step)
        lo, hi = micro * train_cfg.microbatch, (micro + 1) * train_cfg.microbatch
        ids = step * train_cfg.global_batch + np.arange(lo, hi)
        return assemble(config, arrays, rows[lo:hi], ids, step, shape)

    jobs = ((step, micro) for step in range(start, end) for micro in mine)
    bar = None
    if progress and dist_info.main:
        from tqdm import tqdm
        bar = tqdm(total=train_cfg.steps, initial=start, desc="pretrain", unit="step", mininterval=2)
    model.train()
    loader = Prefetcher(make, jobs)
    step_parts, step_tokens, step_start, wait_before = [], 0, time.perf_counter(), 0.0
    finite = True
    for (step, micro), batch in loader:
        batch = batch.to(device)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([train_cfg.seed, step, micro])
                                                      .generate_state(1)[0]))
        last = micro == mine[-1]
        sync = dist_info.enabled and not last
        with (wrapped.no_sync() if sync else _null()), autocast:
            loss, metrics = wrapped(batch, generator)
        local_ok = bool(torch.isfinite(loss)) and finite
        if last:
            finite = _all_finite(local_ok, dist_info, device)
        else:
            finite = local_ok
        if finite:
            with (wrapped.no_sync() if sync else _null()):
                (loss / len(mine)).backward()
        step_parts.append({k: float(v) for k, v in metrics.items()})
        step_tokens += sum(token_counts(batch))
        if not last:
            continue
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
        lr = scheduler.get_last_lr()[0]
        if finite and bool(torch.isfinite(grad_norm)):
            optimizer.step()
        else:
            result.skipped_steps += 1
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        model.update_target(step + 1, train_cfg.steps)
        finite = True
        elapsed = time.perf_counter() - step_start
        row = {"step": step + 1, **_mean_metrics(step_parts, dist_info, device), "lr": lr,
               "grad_norm": float(grad_norm), "skipped_steps": result.skipped_steps}
        speed = {"step": step + 1, "samples_per_s": train_cfg.global_batch / elapsed,
                 "tokens_per_s": step_tokens * dist_info.world / elapsed,
                 "data_wait_share": (loader.wait_s - wait_before) / elapsed}
        result.history.append(row)
        result.timing.append(speed)
        if tracker is not None and dist_info.main:
            tracker({**row, **speed})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['total']:.3f}", info_nce=f"{row['info_nce']:.3f}")
        result.data_wait_s += loader.wait_s - wait_before
        result.step_s += elapsed
        wait_before = loader.wait_s
        point = callback(model.encoder, step + 1) if callback is not None else None
        if point is not None:
            result.evaluations.append(point)
            if tracker is not None:
                tracker(point)
        step_parts, step_tokens, step_start = [], 0, time.perf_counter()
        if (step + 1) % train_cfg.checkpoint_every == 0 or step + 1 == end:
            if dist_info.main:
                save_checkpoint(checkpoint_path, model, optimizer, scheduler, step + 1, document, result,
                                extra_state or {})
            if dist_info.enabled:
                import torch.distributed as dist
                dist.barrier()
    if bar is not None:
        bar.close()
    return result


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _all_finite(local_ok: bool, dist_info: Distributed, device) -> bool:
    """True when every rank's losses of this step were finite (all ranks then skip or step together)."""
    if not dist_info.enabled:
        return local_ok
    import torch.distributed as dist
    flag = torch.tensor([0.0 if local_ok else 1.0], device=device)
    dist.all_reduce(flag)
    return float(flag) == 0.0
