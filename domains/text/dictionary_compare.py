"""One LLM study run with both dictionaries, the general one and the study-trained one, and
their figures side by side in one ``results.json``.

Whether "SAE features do (not) find or steer X" is a finding about SAEs or about one small
dictionary is only answered by running the same study with both. ``case_study.dictionary=both``
runs the study once per dictionary, each in its own sub-folder (``study/``, ``general/``, each
resuming on its own and writing its ``results.json`` atomically); the files a study caches that
do not depend on the dictionary (``case_study.shared_artifacts``: the bias profile, the
harvested activations) are hard-linked from the first sub-run into the second, so they are
computed once. The combined ``results.json`` holds both runs under ``by_dictionary`` and a
``comparison``: every number under ``case_study.compare`` (dotted paths) for each dictionary.
``python -m domains.text.dictionary_compare RUN_DIR`` prints that comparison as the Markdown
table the READMEs carry.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

CHOICES = ("study", "general")


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link ``src`` (a file or a folder) to ``dst`` (copy where links are refused)."""
    if dst.exists() or not src.exists():
        return
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return
    shutil.copytree(src, dst, copy_function=lambda s, d: _link_tree(Path(s), Path(d)))


def _label(row: Any) -> str | None:
    """A list row's name where it has one (``concept``/``basis``/``method``), so rows of two runs
    align by what they are, not by their rank."""
    if not isinstance(row, dict):
        return None
    parts = [str(row[k]) for k in ("concept", "basis", "method") if isinstance(row.get(k), str)]
    return "/".join(parts) or None


def flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    """The numeric leaves of nested dicts and lists, keyed by dotted path (booleans left out)."""
    out: dict[str, float] = {}
    items: Iterable[tuple[Any, Any]]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = [(_label(v) or i, v) for i, v in enumerate(obj)]
    else:
        if isinstance(obj, (int, float)) and not isinstance(obj, bool) and obj == obj:
            out[prefix] = float(obj)
        return out
    for k, v in items:
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def comparison(by_dictionary: dict[str, dict[str, Any]], paths: Iterable[str]) -> list[dict[str, Any]]:
    """One row per numeric figure under any of ``paths``: its value with each dictionary
    (None where that run has no such figure)."""
    flat = {c: flatten(r) for c, r in by_dictionary.items()}
    rows = []
    for path in paths:
        keys = sorted({k for f in flat.values() for k in f if k == path or k.startswith(path + ".")},
                      key=lambda k: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in k.split(".")])
        rows += [{"figure": k, **{c: flat[c].get(k) for c in by_dictionary}} for k in keys]
    return rows


def run_both(run: Callable[[DictConfig, Path], dict[str, Any]], cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run ``run`` once per dictionary in ``run_dir/<choice>`` and combine the results."""
    from core.io import read_json, write_json

    run_dir = Path(run_dir)
    cs = cfg.case_study
    shared = list(cs.get("shared_artifacts") or [])
    results: dict[str, dict[str, Any]] = {}
    for choice in CHOICES:
        sub = run_dir / choice
        done = sub / "results.json"
        if done.exists():
            results[choice] = read_json(done)
            continue
        sub.mkdir(parents=True, exist_ok=True)
        for name in shared if choice != CHOICES[0] else []:
            _link_tree(run_dir / CHOICES[0] / name, sub / name)
        one = cfg.copy()
        with open_dict(one):
            one.case_study.dictionary = choice
        results[choice] = run(one, sub)
        write_json(done, results[choice])
    paths = [str(p) for p in (cs.get("compare") or [])]
    return {"dictionary": "both", "by_dictionary": results, "comparison": comparison(results, paths)}


def per_dictionary(run: Callable[[DictConfig, Path], dict[str, Any]]) -> Callable[[DictConfig, Path], dict[str, Any]]:
    """Decorate a study's ``run`` so that ``case_study.dictionary=both`` goes through :func:`run_both`."""

    @functools.wraps(run)
    def wrapper(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
        if str(OmegaConf.select(cfg, "case_study.dictionary")) == "both":
            return run_both(run, cfg, run_dir)
        return run(cfg, run_dir)

    return wrapper


def markdown_table(combined: dict[str, Any]) -> str:
    """The comparison as a Markdown table (3 significant digits)."""
    fmt = lambda v: "-" if v is None else (f"{int(v)}" if float(v).is_integer() else f"{v:.3g}")  # noqa: E731
    lines = ["| figure | " + " | ".join(f"{c} dictionary" for c in CHOICES) + " |",
             "|---|" + "---|" * len(CHOICES)]
    lines += [f"| `{r['figure']}` | " + " | ".join(fmt(r.get(c)) for c in CHOICES) + " |"
              for r in combined.get("comparison", [])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from core.errors import DataError, UserError
    from core.io import read_json

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(args) != 1:
            raise UserError("usage: python -m domains.text.dictionary_compare RUN_DIR",
                            fix="give the run folder of a case_study.dictionary=both run")
        path = Path(args[0]) / "results.json"
        if not path.exists():
            raise DataError("no results.json in the run folder", path=str(path),
                            fix="finish the run first (the same command resumes it)")
        combined = read_json(path)
        if combined.get("dictionary") != "both":
            raise DataError("this run used one dictionary, not both", path=str(path),
                            fix="rerun the study with case_study.dictionary=both")
    except UserError as err:
        print(f"dictionary_compare: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(combined))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

