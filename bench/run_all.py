"""Every performance figure the project reports, printed by one command.

    python bench/run_all.py            # peer table, harvest vs forward, enrichment (one shard, many shards), example sampler memory
    python bench/run_all.py --quick    # smaller sizes (a few minutes on 2 CPUs)
    python bench/run_all.py --scaling  # also the d_sae / token scaling sweep (bench/scaling.py)

Each benchmark runs as its own subprocess (its own peak memory, its own imports) and its
output is printed as it comes, under a heading. Extra arguments for one benchmark go after
its name, e.g. ``--peer-args "--d-sae 18432 --reps 3"``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FULL = {
    "peer": ["--d-sae", "18432", "4608", "--reps", "2"],
    "harvest": ["--n", "64", "--repeats", "2"],
    "enrich": [],
    "shards": ["--shards", "5", "10"],
    "explain": [],
    "scaling": [],
}
QUICK = {
    "peer": ["--d-sae", "18432", "--steps", "16", "--reps", "1"],
    "harvest": ["--models", "antiberty", "smollm2", "--n", "16", "--repeats", "1"],
    "enrich": [],
    "shards": ["--shards", "2", "4", "--tokens", "100000"],
    "explain": ["--tokens", "1000000", "--features", "10000"],
    "scaling": ["--d-sae", "4608", "18432", "73728", "--tokens", "100000", "1000000", "--steps", "2"],
}
SCRIPTS = {
    "peer": ("Training speed vs SAELens, dictionary_learning, sparsify", "peer_benchmark.py"),
    "harvest": ("Harvest vs the plain forward pass", "harvest_throughput.py"),
    "enrich": ("Enrichment at InterPLM's one-shard scale", "enrich_scale.py"),
    "shards": ("Enrichment at Swiss-Prot scale: shards streamed vs held whole", "enrich_shards.py"),
    "explain": ("Example sampler memory at 1e7 tokens x 1e4 features", "explain_memory.py"),
    "scaling": ("Scaling with d_sae and with tokens on disk", "scaling.py"),
}


def run(name: str, extra: list[str]) -> int:
    title, script = SCRIPTS[name]
    print(f"\n## {title} (bench/{script} {' '.join(extra)})\n", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), *extra],
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    print(f"\n({name}: {time.perf_counter() - t0:.0f} s, exit {proc.returncode})", flush=True)
    return proc.returncode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.add_argument("--scaling", action="store_true", help="also run the scaling sweep")
    p.add_argument("--only", nargs="*", choices=list(SCRIPTS), help="run only these")
    for name in SCRIPTS:
        p.add_argument(f"--{name}-args", default="", help=f"extra arguments for bench/{SCRIPTS[name][1]}")
    args = p.parse_args()
    names = args.only or ["peer", "harvest", "enrich", "shards", "explain", *(["scaling"] if args.scaling else [])]
    base = QUICK if args.quick else FULL
    print(f"# sparsescope benchmarks, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    failed = [n for n in names if run(n, base[n] + shlex.split(getattr(args, f"{n}_args"))) != 0]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
