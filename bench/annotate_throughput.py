"""Annotating N sequences against harvesting the same N sequences at the same hook.

``python bench/annotate_throughput.py --run RUN [--n 10000] [--small 1000] [--sae layer3] [--imgt]``

Sequences: real VH and VL chains from the abnativ wheel that the run never saw (ids and
sequences absent from its ``samples.tsv``), written to one FASTA. Each job runs as its own
``python -m core.cli`` process (so its peak resident memory is its own, read from
``os.wait4``): ``stage=harvest`` of the dictionary's hook; ``sparsescope annotate`` of the same
sequences with that one dictionary and no regions (what costs the same as a harvest: model,
encode, write); the same on the first ``--small`` sequences (memory must not grow with N);
and with ``--imgt`` the ANARCII numbering on the small set (the antibody extra, cached per
sequence). Prints wall and CPU seconds, peak RSS and the ratios to the harvest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: import this checkout's core/domains


def unseen_chains(run: Path, n: int, small: int, fasta: Path, fasta_small: Path) -> int:
    """Write ``n`` VH/VL chains the run never saw to ``fasta``, the first ``small`` to ``fasta_small``."""
    from domains.protein.abnativ_data import load_single
    from domains.protein.fasta import write_fasta
    from domains.protein.records import InputPolicy

    seen = pd.concat([pd.read_csv(p, sep="\t", usecols=["id", "text"]) for p in run.glob("activations/*/samples.tsv")])
    ids, seqs = set(seen["id"]), set(seen["text"])
    out, kept = [], set()
    for j, kind in enumerate(("vh", "vl")):
        quota = n // 2 if j == 0 else n - len(out)
        policy = InputPolicy(on_error="skip", alphabet="standard", min_length=70, max_length=160)
        got = 0
        for r in load_single(kind, quota + 500, seed=11, policy=policy):
            if r.id not in ids and r.sequence not in seqs and r.sequence not in kept and got < quota:
                out.append(r)
                kept.add(r.sequence)
                got += 1
    import random

    random.Random(0).shuffle(out)
    write_fasta(out, fasta)
    write_fasta(out[:small], fasta_small)
    return len(out)


def timed(args: list[str], log: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "core.cli", *args], cwd=ROOT, stdout=fh, stderr=fh)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({log}): {' '.join(args)}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, type=Path, help="a trained run (e.g. the default case study's)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--sae", default="layer3", help="the dictionary to annotate with (its hook is harvested)")
    ap.add_argument("--imgt", action="store_true", help="also time IMGT numbering on the small set")
    ap.add_argument("--work", type=Path, default=Path("/tmp/sparsescope_bench_annotate"))
    a = ap.parse_args()
    from core.eval.compare import markdown
    from core.sequence_annotation.trained_run import find_dictionaries

    hook = find_dictionaries(a.run, [a.sae])[0].hook
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    big, small = a.work / "chains.fasta", a.work / "chains_small.fasta"
    n = unseen_chains(a.run, a.n, a.small, big, small)
    jobs = {
        "harvest": ["stage=harvest", "+harvest=default", f"harvest.fasta={big}", f"harvest.hooks=[{hook}]",
                    f"hydra.run.dir={a.work / 'harvest'}"],
        "annotate": ["annotate", f"annotate.fasta={big}", f"annotate.run={a.run}", f"annotate.saes=[{a.sae}]",
                     "annotate.regions=false", f"hydra.run.dir={a.work / 'annotate'}"],
        "annotate_small": ["annotate", f"annotate.fasta={small}", f"annotate.run={a.run}", f"annotate.saes=[{a.sae}]",
                           "annotate.regions=false", f"hydra.run.dir={a.work / 'annotate_small'}"],
    }
    if a.imgt:
        jobs["annotate_small_imgt"] = ["annotate", f"annotate.fasta={small}", f"annotate.run={a.run}",
                                       f"annotate.saes=[{a.sae}]", f"hydra.run.dir={a.work / 'annotate_imgt'}"]
    rows = []
    for name, args in jobs.items():
        r = timed(args, a.work / f"{name}.log")
        count = n if name in ("harvest", "annotate") else min(a.small, n)
        rows.append({"job": name, "sequences": count, **{k: round(v, 1) for k, v in r.items()},
                     "seq_per_s": round(count / r["wall_s"], 1)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows).set_index("job")
    base = table.loc["harvest"]
    table["wall/harvest"] = (table["wall_s"] / base["wall_s"]).round(2)
    table["cpu/harvest"] = (table["cpu_s"] / base["cpu_s"]).round(2)
    table["peak/harvest"] = (table["peak_mb"] / base["peak_mb"]).round(2)
    sizes = {k: sum(p.stat().st_size for p in (a.work / k).rglob("*") if p.is_file()) / 2**20
             for k in ("harvest", "annotate")}
    print(f"\n{n} unseen chains, dictionary {a.sae} at {hook}; output MB: "
          + ", ".join(f"{k} {v:.0f}" for k, v in sizes.items()))
    print(markdown(table))


if __name__ == "__main__":
    main()
