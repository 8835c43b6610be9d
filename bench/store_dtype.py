"""Store precision: disk size and SAE quality of one harvest stored as float32, bfloat16, float16.

Each dtype goes through the commands a user runs (``stage=harvest ... harvest.dtype=X`` on
the same AntiBERTy chains, then ``stage=train`` on that store with the same seed, SAE and
token budget), so the sizes are the real files and the FVU is the trained SAE's held-out
figure. Prints one row per dtype and the ratios against float32.

    python bench/store_dtype.py --pairs 300 --layer 3 --out /tmp/store_dtype
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DTYPES = ["float32", "bfloat16", "float16"]
sys.path.insert(0, str(ROOT))


def sparsescope(*args: str) -> dict:
    subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir="))
    return json.loads((Path(run) / "results.json").read_text())


def write_chains(n_pairs: int, path: Path) -> Path:
    from domains.protein.abnativ_data import load_paired
    from domains.protein.fasta import write_fasta

    return write_fasta(load_paired(n_pairs, seed=0), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--layer", type=int, default=3)
    ap.add_argument("--expansion", type=int, default=4)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default="/tmp/store_dtype")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fasta = write_chains(args.pairs, out / "chains.fasta")
    rows = []
    for dtype in DTYPES:
        t0 = time.time()
        h = sparsescope("stage=harvest", "model=antiberty", "+harvest=default", f"harvest.fasta={fasta}",
                        f"harvest.layers=[{args.layer}]", f"harvest.dtype={dtype}",
                        f"hydra.run.dir={out / dtype}")
        store = Path(next(iter(h["harvest"].values()))["path"])
        n_tokens = next(iter(h["harvest"].values()))["n_tokens"]
        harvest_s = time.time() - t0
        size = sum(p.stat().st_size for p in store.glob("shard_*.safetensors"))
        for seed in (0, 1) if dtype == "float32" else (0,):
            t0 = time.time()
            tr = sparsescope("stage=train", f"data.root={store}", "sae=topk", f"sae.expansion_factor={args.expansion}",
                             f"sae.k={args.k}", f"trainer.total_tokens={n_tokens * args.epochs}", f"seed={seed}",
                             f"hydra.run.dir={out / dtype / f'train_seed{seed}'}")
            summary = tr["train"]
            rows.append({"dtype": dtype if seed == 0 else f"{dtype}, seed 1 (noise level)", "tokens": n_tokens,
                         "bytes": size, "harvest_s": round(harvest_s, 1), "train_s": round(time.time() - t0, 1),
                         "fvu": summary.get("fvu") or summary["metrics"].get("val/fvu"), "dead_frac": summary.get("dead_frac")})
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"\n{args.pairs * 2} chains, {base['tokens']:,} residues, AntiBERTy layer {args.layer}, TopK "
          f"{args.expansion}x k {args.k}, {args.epochs} passes")
    print("| dtype | store MB | size / float32 | held-out FVU | FVU - float32 | dead |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['bytes'] / 1e6:.1f} | {r['bytes'] / base['bytes']:.2f} | {r['fvu']:.4f} | "
              f"{r['fvu'] - base['fvu']:+.4f} | {r['dead_frac']:.3f} |")
    (out / "store_dtype.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
