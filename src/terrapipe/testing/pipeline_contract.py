"""Does dvc.yaml say what the code does? Stage names, outputs and dependencies checked against the code.

DVC re-runs a stage only when one of its declared deps changes, so a module a stage imports but does
not list is a change that never re-runs it. ``missing_deps`` walks each stage script's imports (every
``import`` statement, lazy ones inside functions included) through the terrapipe package, adds the
backends a fetch stage selects by name (terrapipe.sources.BACKENDS), and reports each file that no
declared dep covers.

    python -m terrapipe.testing.pipeline_contract          # lists what dvc.yaml lacks (exit 1 if anything)
    python -m terrapipe.testing.pipeline_contract --write  # rewrites the code deps of every stage in dvc.yaml
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"


def _module_file(name: str) -> Path | None:
    """The source file of a terrapipe module or package, None for anything else."""
    if name != "terrapipe" and not name.startswith("terrapipe."):
        return None
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names (``from a import b`` adds a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_files(script: Path, extra_modules: tuple[str, ...] = ()) -> set[Path]:
    """The script, its sibling helpers and every terrapipe file it imports, transitively."""
    seen: set[Path] = set()
    todo = [script, *filter(None, map(_module_file, extra_modules))]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported_modules(path):
            local = script.parent / f"{name}.py"   # a stage's sibling helper (stages/_interpreter.py)
            if path.parent == script.parent and local.is_file():
                todo.append(local)
            todo += [f for f in map(_module_file, _parents(name)) if f]
    return seen


def backend_modules(stage_name: str) -> tuple[str, ...]:
    """Modules a fetch stage imports by name through terrapipe.sources.BACKENDS (all its sources)."""
    from terrapipe.sources import BACKENDS

    dataset = stage_name.removeprefix("fetch_")
    if not stage_name.startswith("fetch_") or dataset not in BACKENDS:
        return ()
    return tuple(target.split(":")[0] for target, _ in BACKENDS[dataset].values())


def pipeline_stages(repo: Path = REPO):
    """dvc.yaml's stages as DVC resolves them (foreach expanded), without data.dvc."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        return [s for s in dvc_repo.index.stages if s.cmd]


def script_of(stage) -> Path:
    """The stage script a ``python stages/<name>.py ...`` command runs."""
    words = stage.cmd.split()
    if words[0] != "python" or not words[1].startswith("stages/"):
        raise ValueError(f"stage {stage.addressing}: command {stage.cmd!r} is not `python stages/<script>.py ...`")
    return REPO / words[1]


def missing_deps(repo: Path = REPO) -> dict[str, list[str]]:
    """Stage name -> the files it imports that none of its declared deps covers."""
    missing = {}
    for stage in pipeline_stages(repo):
        declared = [(repo / d.def_path).resolve() for d in stage.deps]
        needed = imported_files(script_of(stage), backend_modules(stage.addressing))
        uncovered = sorted(str(f.relative_to(REPO)) for f in needed
                           if not any(f == d or d in f.parents for d in declared))
        if uncovered:
            missing[stage.addressing] = uncovered
    return missing


def _is_code(dep: str) -> bool:
    return dep.startswith(("stages/", "src/"))


def write_code_deps(repo: Path = REPO) -> None:
    """Replace each dvc.yaml stage's code deps with the files it imports (data deps are kept, comments too)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = repo / "dvc.yaml"
    document = yaml.load(path)
    needed: dict[str, set[Path]] = {}
    for stage in pipeline_stages(repo):  # a foreach stage gets the union over its items
        name = stage.addressing.split("@")[0]
        needed.setdefault(name, set()).update(imported_files(script_of(stage), backend_modules(stage.addressing)))
    for name, spec in document["stages"].items():
        body = spec.get("do", spec)
        script = [f"stages/{f.name}" for f in needed[name] if f.parent.name == "stages" and f.parent.parent == repo
                  and not f.name.startswith("_")]
        code = script + sorted(str(f.relative_to(repo)) for f in needed[name] if str(f.relative_to(repo)) not in script)
        data = [d for d in body.get("deps", []) if not _is_code(str(d))]
        body["deps"] = code + data
    yaml.dump(document, path)


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_code_deps()
    problems = missing_deps()
    for name, files in problems.items():
        print(f"{name}: add to deps in dvc.yaml:\n  - " + "\n  - ".join(files))
    sys.exit(1 if problems else 0)
