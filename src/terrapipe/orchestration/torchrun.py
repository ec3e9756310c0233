"""Multi-GPU training through the same entry point: `dvc repro pretrain@KEY` re-executes its stage script
under torchrun when the machine asks for more than one process per node.

The Kubernetes work pool's template sets TERRAPIPE_NPROC_PER_NODE to the pod's GPU count. For several nodes
(one pod per node, e.g. an Indexed Job) also set TERRAPIPE_NNODES, TERRAPIPE_MASTER_ADDR (rank 0's host),
optionally TERRAPIPE_MASTER_PORT, and TERRAPIPE_NODE_RANK (or let Kubernetes' JOB_COMPLETION_INDEX give it).
Under torchrun (LOCAL_RANK set) nothing is re-executed: the training loop joins the process group itself.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from terrapipe.errors import ConfigError

NPROC = "TERRAPIPE_NPROC_PER_NODE"


def _int(env: Mapping[str, str], name: str, default: int | None = None, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        if default is None:
            raise ConfigError(f"{name} is not set; multi-node training needs it (see terrapipe.orchestration.torchrun)")
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be a whole number >= {minimum}")
    return value


def torchrun_command(script: str, args: list[str], env: Mapping[str, str] = os.environ) -> list[str] | None:
    """The torchrun command that runs ``script ARGS`` on the configured processes, or None to run it as is."""
    if "LOCAL_RANK" in env:
        return None  # already a torchrun rank
    nproc = _int(env, NPROC, default=1, minimum=1)
    nnodes = _int(env, "TERRAPIPE_NNODES", default=1, minimum=1)
    if nproc == 1 and nnodes == 1:
        return None
    launch = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes == 1:
        launch.append("--standalone")
    else:
        master = env.get("TERRAPIPE_MASTER_ADDR")
        if not master:
            raise ConfigError("TERRAPIPE_NNODES > 1 needs TERRAPIPE_MASTER_ADDR (the host of node rank 0)")
        rank = _int(env, "TERRAPIPE_NODE_RANK", default=_int(env, "JOB_COMPLETION_INDEX", default=0))
        if rank >= nnodes:
            raise ConfigError(f"node rank {rank} is not below TERRAPIPE_NNODES={nnodes}")
        launch += [f"--nnodes={nnodes}", f"--node_rank={rank}", f"--master_addr={master}",
                   f"--master_port={_int(env, 'TERRAPIPE_MASTER_PORT', default=29500, minimum=1)}"]
    return [*launch, script, *args]


def reexec_under_torchrun(script: str, args: list[str] | None = None) -> None:
    """Replace this process by torchrun running ``script`` when more than one process is configured."""
    command = torchrun_command(script, list(sys.argv[1:] if args is None else args))
    if command is not None:
        print(f"terrapipe: {NPROC}={os.environ.get(NPROC)}: running under torchrun: {' '.join(command)}",
              file=sys.stderr, flush=True)
        os.execv(command[0], command)
