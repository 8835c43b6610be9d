"""One process against Lightning DDP (2 processes) for training and for harvest, side by side.

    python bench/scaleout.py [--processes 2] [--tokens 131072] [--d 256] [--d-sae 4096] [--n 32]

Both run the command a user types (``python -m core.cli ...``) in a subprocess, one after the
other on the same inputs: training on a planted-feature store (d, d_sae, TopK k 32, global batch
4096: one process at 4096, N processes at 4096 / N each), harvest of random 120-residue
sequences through AntiBERTy (two layers). Threads are split so every run uses the machine's
cores once: one process gets all of them, each of N processes 1 / N. Printed: wall time of the
command (imports, process start-up and rendezvous included), the stage's own time from
results.json, training-loop tokens/s, and each ratio against one process (> 1: DDP faster).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _cli(args: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir="))
    return wall, json.loads((Path(run_dir) / "results.json").read_text())


def _threads(processes: int) -> int:
    return max(1, (os.cpu_count() or 1) // processes)


def bench_train(tmp: Path, a: argparse.Namespace) -> list[dict]:
    from tests.planted_store import write_planted_store

    store = write_planted_store(tmp / "store", n_samples=a.tokens // 64, tokens_per_sample=64,
                                shard_tokens=16384, d=a.d, n_features=a.d_sae, k=32)
    rows = []
    for n in (1, a.processes):
        args = ["stage=train", f"data.root={store}", "sae=topk", f"sae.d_sae={a.d_sae}", "sae.k=32",
                f"trainer.total_tokens={a.tokens}", "trainer.logger=none", "trainer.enable_progress_bar=false",
                f"threads={_threads(n)}", f"hydra.run.dir={tmp / f'train{n}'}", "trainer.accelerator=cpu",
                f"data.batch_size={4096 // n}"]
        args += ["trainer=ddp", f"trainer.devices={n}", "trainer.precision=32-true"] if n > 1 else ["trainer.devices=1"]
        wall, res = _cli(args)
        rows.append({"job": "train", "processes": n, "wall_s": wall, "stage_s": res["run"]["seconds"],
                     "loop_tok_s": res["train"]["tokens_per_s"], "steps": res["train"]["steps"]})
    return rows


def bench_harvest(tmp: Path, a: argparse.Namespace) -> list[dict]:
    rng = random.Random(0)
    fasta = tmp / "seqs.fasta"
    fasta.write_text("".join(f">s{i}\n{''.join(rng.choice('ACDEFGHIKLMNPQRSTVWY') for _ in range(120))}\n"
                             for i in range(a.n)))
    rows = []
    for n in (1, a.processes):
        args = ["stage=harvest", "model=antiberty", "model.device=cpu", "+harvest=default", f"harvest.fasta={fasta}",
                "harvest.layers=[1,4]", "harvest.batch_tokens=1024", f"threads={_threads(n)}",
                f"hydra.run.dir={tmp / f'harvest{n}'}"]
        if n > 1:
            args += [f"harvest.parallel.devices={n}", "harvest.parallel.accelerator=cpu"]
        wall, res = _cli(args)
        rows.append({"job": "harvest", "processes": n, "wall_s": wall, "stage_s": res["run"]["seconds"],
                     "loop_tok_s": None, "steps": next(iter(res["harvest"].values()))["n_tokens"]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=131072)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--n", type=int, default=32, help="sequences to harvest")
    ap.add_argument("--only", choices=["train", "harvest"], default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        if a.only in (None, "train"):
            rows += bench_train(Path(tmp), a)
        if a.only in (None, "harvest"):
            rows += bench_harvest(Path(tmp), a)
    print(f"cpu_count={os.cpu_count()}  load average={os.getloadavg()[0]:.1f}")
    print("| job | processes | wall s | stage s | loop tok/s | steps / tokens | wall ratio | stage ratio | loop ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = {}
    for r in rows:
        one = base.setdefault(r["job"], r)
        loop = f"{r['loop_tok_s'] / one['loop_tok_s']:.2f}" if r["loop_tok_s"] and one["loop_tok_s"] else "-"
        print(f"| {r['job']} | {r['processes']} | {r['wall_s']:.1f} | {r['stage_s']:.1f} | {r['loop_tok_s'] or '-'} | "
              f"{r['steps']} | {one['wall_s'] / r['wall_s']:.2f} | {one['stage_s'] / r['stage_s']:.2f} | {loop} |")


if __name__ == "__main__":
    main()
