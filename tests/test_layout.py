"""The house's shape, checked: core never imports a domain, no import cycle between project
modules (lazy imports inside functions included), every case study's runner in one place,
files short enough to read, and the README's map naming every core package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "domains")
MAX_LINES = 400


def project_modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def imports_of(path: Path, module: str, known: set[str]) -> set[str]:
    """Project modules that ``path`` imports anywhere in its body (an imported name that is a
    submodule counts as that submodule)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                out.add(name)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = project_modules()
    known = set(mods)
    return {m: imports_of(p, m, known) for m, p in mods.items()}


def test_core_never_imports_a_domain(graph):
    bad = sorted((m, d) for m, deps in graph.items() if m.startswith("core") for d in deps
                 if d.startswith("domains"))
    assert not bad, bad


def test_no_import_cycle_between_project_modules(graph):
    names = sorted(graph)
    index = {m: i for i, m in enumerate(names)}
    # a package's __init__ re-exporting its own submodules is not a cycle: drop edges from a
    # package to its own children
    edges = [(index[m], index[d]) for m, deps in graph.items() for d in deps
             if not d.startswith(m + ".")]
    rows, cols = (np.array(x, dtype=np.int64) for x in zip(*edges, strict=True))
    adj = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(names), len(names)))
    _, labels = connected_components(adj, directed=True, connection="strong")
    groups: dict[int, list[str]] = {}
    for m, lab in zip(names, labels, strict=True):
        groups.setdefault(int(lab), []).append(m)
    cycles = [g for g in groups.values() if len(g) > 1]
    assert not cycles, cycles


def test_files_are_short():
    long = [(str(p.relative_to(ROOT)), n) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, long


def test_every_case_study_runner_has_one_name_and_place():
    for conf in sorted((ROOT / "conf" / "case_study").glob("*.yaml")):
        cs = yaml.safe_load(conf.read_text())["case_study"]
        runner = cs["runner"]
        m = re.fullmatch(r"domains\.(\w+)\.studies\.(\w+):run", runner)
        assert m, f"{conf.name}: runner {runner!r} is not domains.<domain>.studies.<case>:run"
        path = ROOT / "domains" / m.group(1) / "studies" / f"{m.group(2)}.py"
        assert path.exists(), f"{conf.name}: {path} does not exist"
        assert "def run(cfg" in path.read_text(), f"{path} has no run(cfg, run_dir)"
        readme = ROOT / "case_studies" / cs["name"].removesuffix("_tiny") / "README.md"
        if readme.exists():
            assert f"studies/{m.group(2)}.py" in readme.read_text(), f"{readme} does not name its runner"
    runners = {p.relative_to(ROOT).as_posix() for p in (ROOT / "domains").rglob("*.py")
               if re.search(r"^def run\(cfg", p.read_text(), re.M)}
    assert all("/studies/" in r for r in runners), sorted(runners)
    cases = [Path(r).stem for r in runners]
    assert len(cases) == len(set(cases)), f"a case study has two runners: {sorted(runners)}"


def test_readme_lists_every_core_package_in_what_is_inside():
    text = (ROOT / "README.md").read_text()
    inside = text.split("## What is inside", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `(core/\w+)/`", inside, re.M)
    packages = sorted(f"core/{p.name}" for p in (ROOT / "core").iterdir() if (p / "__init__.py").exists())
    assert sorted(set(listed)) == packages, {"missing": sorted(set(packages) - set(listed)),
                                             "stale": sorted(set(listed) - set(packages))}
    assert len(listed) == len(set(listed)), "a core package is listed twice"
