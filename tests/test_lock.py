"""constraints.txt is a complete lock: every package in this environment is pinned there, at its version."""
import re
from importlib import metadata

from conftest import REPO

OWN = {"terrapipe", "pip", "setuptools", "wheel"}


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def test_every_installed_package_is_pinned_at_its_installed_version():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    installed = {_name(d.metadata["Name"]): d.version.split("+")[0] for d in metadata.distributions()}
    unpinned = sorted(set(installed) - set(pins) - OWN)
    assert not unpinned, f"installed but not in constraints.txt (run scripts/lock.sh): {unpinned}"
    drifted = {n: (v, pins[n]) for n, v in installed.items() if n in pins and v != pins[n]}
    assert not drifted, f"installed version differs from the lock: {drifted}"
