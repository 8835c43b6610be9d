"""Several dictionaries side by side: one row per dictionary and one column per headline
metric (``<eval>.<metric>``), written as TSV and Markdown, and one bar chart per metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from core.io import atomic_path, write_text


def comparison_table(headlines: dict[str, dict[str, dict[str, float | None]]]) -> pd.DataFrame:
    """``{dictionary: {eval: {metric: value}}}`` -> DataFrame indexed by dictionary."""
    rows = []
    for name, evals in headlines.items():
        row: dict[str, Any] = {"dictionary": name}
        for ev, metrics in evals.items():
            for m, v in metrics.items():
                row[f"{ev}.{m}"] = v
        rows.append(row)
    return pd.DataFrame(rows).set_index("dictionary")


def markdown(table: pd.DataFrame) -> str:
    """A markdown table, the index (named after ``table.index.name``) as its first column."""
    cols = list(table.columns)
    lines = [f"| {table.index.name or ''} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, row in table.iterrows():
        cells = ["" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)) for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_metrics(table: pd.DataFrame, folder: Path) -> list[Path]:
    """One PNG bar chart per metric column, dictionaries on the x axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for col in table.columns:
        values = pd.to_numeric(table[col], errors="coerce")
        if values.notna().sum() == 0:
            continue
        fig, ax = plt.subplots(figsize=(max(3.0, 0.8 * len(values) + 1.5), 3.0))
        ax.bar(range(len(values)), values.fillna(0).to_numpy(), color="#4878a8")
        ax.set_xticks(range(len(values)), [str(i) for i in table.index], rotation=30, ha="right")
        ax.set_title(col)
        fig.tight_layout()
        path = folder / f"{col}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        out.append(path)
    return out


def write_comparison(headlines: dict[str, dict[str, dict[str, float | None]]], run_dir: Path) -> dict[str, Any]:
    table = comparison_table(headlines)
    with atomic_path(run_dir / "comparison.tsv") as tmp:
        table.to_csv(tmp, sep="\t", float_format="%.6g")
    write_text(run_dir / "comparison.md", markdown(table))
    figures = plot_metrics(table, run_dir / "figures")
    return {"table": str(run_dir / "comparison.tsv"), "markdown": str(run_dir / "comparison.md"),
            "figures": [str(p) for p in figures]}
