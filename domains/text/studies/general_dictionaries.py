"""Case study ``general_dictionaries``: an LLM's residual stream dictionaries trained once on broad text.

For each configured layer and architecture, :func:`domains.text.general.ensure` takes the
dictionary from the library (user cache) or harvests the broad corpus and trains it; this runner
writes the table the README shows (layer, architecture, tokens, FVU, L0, dead fraction, CE
recovered, whether it was trained now or found in the cache) to ``general_dictionaries.md`` and
returns it as ``results.json``. A second run with the same config trains nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

COLUMNS = ("layer", "architecture", "d_sae", "train_tokens", "fvu", "l0", "dead_frac", "ce_recovered_zero",
           "ce_recovered_mean", "kl", "train_seconds", "cache")


def row(entry: dict[str, Any]) -> dict[str, Any]:
    ev, tr = entry.get("eval") or {}, entry.get("training") or {}
    core, sp = ev.get("core") or {}, ev.get("spliced") or {}
    return {"layer": entry["layer"], "architecture": entry["architecture"], "d_sae": int(entry["sae"].cfg.d_sae),
            "train_tokens": tr.get("tokens"), "fvu": core.get("fvu"), "l0": core.get("l0"),
            "dead_frac": core.get("dead_frac"), "ce_recovered_zero": sp.get("ce_recovered_zero"),
            "ce_recovered_mean": sp.get("ce_recovered_mean"), "kl": sp.get("kl"),
            "train_seconds": tr.get("seconds"), "cache": "trained now" if entry["trained_now"] else "hit",
            "config_hash": entry["config_hash"], "folder": entry["folder"]}


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.io import write_text
    from domains.text.general import check_corpus, ensure

    run_dir = Path(run_dir)
    gc = OmegaConf.to_container(cfg.general, resolve=True)
    check_corpus(gc)
    t0 = time.time()
    adapter = load_adapter(cfg.model)
    entries = ensure(adapter, list(cfg.case_study.layers), gc, run_dir / "general")
    rows = [row(e) for _, e in sorted(entries.items())]
    write_text(run_dir / "general_dictionaries.md", markdown(rows))
    corpus = next((e.get("corpus") for e in entries.values() if e.get("corpus")), None)
    return {"dictionaries": rows, "corpus": corpus, "model": adapter.name,
            "trained_now": sum(e["trained_now"] for e in entries.values()),
            "cache_hits": sum(not e["trained_now"] for e in entries.values()),
            "wall_s": round(time.time() - t0, 1)}
