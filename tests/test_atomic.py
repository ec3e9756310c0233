"""Outputs appear whole or not at all; a failure leaves the previous version in place."""
import os

import pytest

from terrapipe.atomic import atomic_path, write_json


def test_file_replaced_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind


def test_directory_replaced_whole(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    (target / "stale.npy").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, directory=True) as tmp:
            (tmp / "a").write_text("partial")
            raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["stale.npy"]
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["a"]  # no stale file survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_write_json_rejects_nan_without_touching_target(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(ValueError):
        write_json(target, {"a": float("nan")})
    assert target.read_text().strip().startswith("{")


def test_temporaries_of_a_killed_run_are_removed_but_a_live_writers_are_kept(tmp_path):
    target = tmp_path / "store"
    dead = tmp_path / ".store.tmp-999999999-0badf00d"        # no such process
    live = tmp_path / f".store.tmp-{os.getppid()}-0badf00d"   # a running process: another writer
    for folder in (dead, live):
        folder.mkdir()
        (folder / "half.npy").write_bytes(b"x" * 100)
    with atomic_path(target, directory=True) as tmp:
        (tmp / "a").write_text("new")
    assert not dead.exists() and live.exists()
