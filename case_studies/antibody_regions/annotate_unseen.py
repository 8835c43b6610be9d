"""Do the run's region labels hold on chains it never saw? ``sparsescope annotate`` on unseen chains.

``python case_studies/antibody_regions/annotate_unseen.py --run RUN --out DIR [--pairs 100]``

Draws ``--pairs`` antibodies (heavy + light chain) from the abnativ paired set that are not in
the run (neither id nor sequence), writes ``DIR/unseen.fasta``, runs
``sparsescope annotate annotate.fasta=DIR/unseen.fasta annotate.run=RUN hydra.run.dir=DIR``
(IMGT regions by ANARCII), and then scores, per layer and region, the SAE latent the run chose
for that region (``enrichment_best.tsv``) on the new chains exactly as the run scored it:
firing = activation above the chosen threshold times the latent's run-wide maximum; precision
per residue, recall per chain (the region found when the latent fires anywhere in it), F1.
Prints a markdown table beside the run's own test F1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: import this checkout's core/domains


def unseen_pairs(run: Path, pairs: int, fasta: Path) -> int:
    from domains.protein.abnativ_data import load_paired
    from domains.protein.fasta import write_fasta
    from domains.protein.records import InputPolicy

    seen = pd.concat([pd.read_csv(p, sep="\t", usecols=["id", "text"]) for p in run.glob("activations/*/samples.tsv")])
    policy = InputPolicy(on_error="skip", alphabet="standard", min_length=70, max_length=160)
    recs = load_paired(4 * pairs, seed=7, policy=policy)
    new = [r for r in recs if r.id not in set(seen["id"]) and r.sequence not in set(seen["text"])]
    write_fasta(new[: 2 * pairs], fasta)
    return len(new[: 2 * pairs])


def score(run: Path, out: Path) -> pd.DataFrame:
    import anndata as ad

    residues = pd.read_parquet(out / "annotations" / "residues.parquet")
    chains = residues[["sequence_id", "position", "region"]].drop_duplicates()
    rows = []
    for best_path in sorted(run.glob("layer*/enrichment/enrichment_best.tsv")):
        layer = best_path.parent.parent.name
        best = pd.read_csv(best_path, sep="\t")
        best = best[(best.basis == "sae") & best.concept.str.startswith("IMGT:")
                    & ~best.concept.str.endswith("_any")]
        fmax = ad.read_h5ad(best_path.parent / "features.h5ad").var["max_activation"].to_numpy()
        mine = residues[residues.dictionary == layer]
        for r in best.itertuples():
            region = r.concept.split(":", 1)[1]
            f = int(r.feature)
            fired = mine[(mine.feature == f) & (mine.activation > float(r.threshold) * fmax[f])]
            has = chains[chains.region == region]
            hit = fired[fired.region == region]
            precision = len(hit) / len(fired) if len(fired) else float("nan")
            recall = hit.sequence_id.nunique() / has.sequence_id.nunique() if len(has) else float("nan")
            f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
            rows.append({"layer": layer, "region": region, "feature": f, "threshold": r.threshold,
                         "run test F1": round(float(r.f1_test), 3), "unseen precision": round(precision, 3),
                         "unseen recall": round(recall, 3), "unseen F1": round(f1, 3)})
    return pd.DataFrame(rows)


def main() -> None:
    from core.eval.compare import markdown

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=100)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    n = unseen_pairs(a.run, a.pairs, a.out / "unseen.fasta")
    if not (a.out / "annotations" / "annotate.json").exists() or "complete\": true" not in \
            (a.out / "annotations" / "annotate.json").read_text():
        subprocess.run([sys.executable, "-m", "core.cli", "annotate", f"annotate.fasta={a.out / 'unseen.fasta'}",
                        f"annotate.run={a.run}", f"hydra.run.dir={a.out}"], cwd=ROOT, check=True)
    table = score(a.run, a.out)
    print(f"{n} unseen chains\n")
    print(markdown(table.set_index("layer")))


if __name__ == "__main__":
    main()
