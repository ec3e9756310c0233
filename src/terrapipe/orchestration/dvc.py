"""`dvc` commands from a flow: one at a time, their log line by line in the run log, failures classified.

DVC keeps one lock per workspace and gives up after a few seconds ("Unable to acquire lock"), so every
call here holds a module lock (one process) and, inside a Prefect run, the slot of the global concurrency
limit ``dvc`` (every process that talks to the same Prefect server, e.g. runs served from one checkout).
A flow takes the slot once for its whole run (``dvc_slot``): handing it over between calls costs up to
2 s each on this stack, and another flow's stages between two of ours would change what ours reads.
Prefect skips a limit that does not exist, so ``ensure_dvc_limit`` creates it first (1 slot: raise it
with `prefect gcl update dvc --limit N` when flow runs work in clones of their own, as workers' runs do).

Only transient failures are worth a retry: lock contention, and network or remote-storage errors while
data moves (push, pull, fetch). A stage that fails (its script exits non-zero, e.g. validate exiting 2
on a broken data contract) fails the same way again, so it is permanent and never retried.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

from terrapipe.errors import TerrapipeError

LIMIT = "dvc"                 # the Prefect global concurrency limit that serialises DVC calls
LOCK_CONTENTION = "Unable to acquire lock"
REMOTE_COMMANDS = ("push", "pull", "fetch")
NETWORK_ERRORS = ("Connection refused", "Connection reset", "Connection aborted", "timed out", "Timeout",
                  "Temporary failure in name resolution", "Name or service not known", "Network is unreachable",
                  "Max retries exceeded", "RemoteDisconnected", "SSLError", "503", "502", "504",
                  "Service Unavailable", "SlowDown", "Too Many Requests")
TAIL_LINES = 40               # lines of the command's output kept for the error message

_local = threading.Lock()
log = logging.getLogger("terrapipe.orchestration")


class DvcCommandError(TerrapipeError):
    """A `dvc` command exited non-zero; ``transient`` says whether running it again may succeed."""

    def __init__(self, command: list[str], returncode: int, tail: str, transient: bool):
        self.command, self.returncode, self.tail, self.transient = command, returncode, tail, transient
        kind = "transient (retried)" if transient else "permanent (not retried)"
        super().__init__(f"`{' '.join(command)}` failed with exit status {returncode}, {kind}:\n{tail}")

    def __reduce__(self):
        return type(self), (self.command, self.returncode, self.tail, self.transient)


def is_transient(command: list[str], output: str) -> bool:
    """Whether a failed `dvc` command may succeed when run again (see the module docstring)."""
    if LOCK_CONTENTION in output:
        return True
    moves_data = any(word in command for word in REMOTE_COMMANDS)
    return moves_data and any(pattern in output for pattern in NETWORK_ERRORS)


def retry_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a task only when it failed with a transient DvcCommandError."""
    try:
        state.result()
    except DvcCommandError as exc:
        return exc.transient
    except Exception:  # noqa: BLE001 - anything else is a bug or bad input: running it again changes nothing
        return False
    return False


def dvc_executable() -> str:
    """`dvc` on PATH, else the one beside this interpreter (a venv used without activating it)."""
    found = shutil.which("dvc") or shutil.which("dvc", path=str(Path(sys.executable).parent))
    if found is None:
        raise TerrapipeError("dvc is not installed in this environment: run `make install` (or pip install dvc)")
    return found


def _run_logger():
    """The Prefect run logger inside a flow or task run (lines reach the UI), else a plain logger."""
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() or TaskRunContext.get():
        from prefect import get_run_logger
        return get_run_logger()
    return log


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.id


def ensure_dvc_limit() -> None:
    """Create the global concurrency limit ``dvc`` (1 slot) if the Prefect server lacks it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=LIMIT, limit=1))
            except ObjectAlreadyExists:  # another process created it meanwhile
                pass


_held = False  # this process holds the ``dvc`` slot (a flow took it; its tasks and subflows re-enter free)


@contextlib.contextmanager
def dvc_slot():
    """Hold the ``dvc`` concurrency slot for this process while inside a Prefect run; re-entrant."""
    global _held
    from prefect.context import FlowRunContext

    if _held or FlowRunContext.get() is None:  # taken already, or no server to ask
        yield
        return
    from prefect.concurrency.sync import concurrency

    ensure_dvc_limit()
    with concurrency(LIMIT, occupy=1):
        _held = True
        try:
            yield
        finally:
            _held = False


def run_dvc(*args: str, stdout_only: bool = False) -> str:
    """Run ``dvc ARGS`` here (the repository root), streaming its output line by line into the run log.

    The child gets PYTHONUNBUFFERED=1 (stage scripts' lines arrive as they are printed) and
    TERRAPIPE_FLOW_RUN_ID (the W&B and catalog records name the Prefect run). Returns the output;
    ``stdout_only``: stdout alone (a `--json` listing), stderr going to the log. Raises DvcCommandError.
    """
    command = ["dvc", *args]
    logger = _run_logger()
    run_id = _flow_run_id()
    env = {"TQDM_MININTERVAL": "10",  # a progress bar redrawn into a pipe is one log line per redraw
           **os.environ, "PYTHONUNBUFFERED": "1", **({"TERRAPIPE_FLOW_RUN_ID": run_id} if run_id else {})}
    lines: list[str] = []
    with _local, dvc_slot():
        logger.info("$ %s  (in %s)", " ".join(command), Path.cwd())
        with subprocess.Popen([dvc_executable(), *args], env=env, stdout=subprocess.PIPE, text=True, bufsize=1,
                              stderr=subprocess.PIPE if stdout_only else subprocess.STDOUT) as proc:
            if stdout_only:
                out, err = proc.communicate()
                lines = err.splitlines()
            for line in lines if stdout_only else proc.stdout:
                line = line.rstrip("\n")
                if not stdout_only:
                    lines.append(line)
                if line.strip():
                    logger.info("%s", line)
    if proc.returncode:
        tail = "\n".join(deque(lines, maxlen=TAIL_LINES))
        raise DvcCommandError(command, proc.returncode, tail, is_transient(command, "\n".join(lines)))
    return out if stdout_only else "\n".join(lines)
