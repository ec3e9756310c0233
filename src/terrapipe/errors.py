"""Errors a user can act on: each names the file, the field and what to do."""
from __future__ import annotations


class TerrapipeError(Exception):
    """Base class: the message is printed as-is by stages and the CLI, which then exit non-zero."""

    exit_code = 2


class ConfigError(TerrapipeError):
    """params.yaml (or an override) has an unknown key, a wrong type or an impossible value."""


class InputDataError(TerrapipeError):
    """A data file is unreadable, truncated or lacks a field the pipeline needs."""

    def __init__(self, path, problem: str, fix: str):
        self.path, self.problem, self.fix = str(path), problem, fix
        super().__init__(f"{path}: {problem}. {fix}")

    def __reduce__(self):  # rebuilt from its three parts when it crosses from a worker process
        return type(self), (self.path, self.problem, self.fix)
