"""Crosscoder training throughput against the matching single-source SAE, in one run.

    python bench/crosscoder_throughput.py                 # a few minutes on 2 CPUs
    python bench/crosscoder_throughput.py --steps 10 --reps 1

The single-source baseline is a BatchTopK SAE on one source (width 512, AntiBERTy's); the
crosscoders are ``crosscoder_batchtopk`` over 2 sources (512 + 512: AntiBERTy + IgLM), over
512 + 192 (AntiBERTy + IgLM-S) and over 4 sources (4 x 512: four AntiBERTy layers), all with
the same number of latents, the same k, batch and optimiser, through ``core.training.train_sae``
(the full Lightning path, fp32 on the CPU). The encoder and decoder of a crosscoder are
``sum of widths`` wide, so a crosscoder's cost per token should grow like its total width over
the SAE's width (2x for two 512-wide sources), not worse. Data are Gaussian rows (throughput
does not depend on what the rows hold); configurations are interleaved and the median of
``--reps`` repetitions is reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {  # name: source widths (one width = the single-source SAE)
    "batchtopk SAE, 1 source (512)": [512],
    "crosscoder, 2 sources (512+512)": [512, 512],
    "crosscoder, 2 sources (512+192)": [512, 192],
    "crosscoder, 4 sources (4x512)": [512, 512, 512, 512],
}


def tokens_per_s(widths: list[int], args) -> float:
    from core.training import TensorDataModule, train_sae

    n = args.batch * args.steps
    x = torch.randn(n, sum(widths), generator=torch.Generator().manual_seed(0))
    if len(widths) == 1:
        cfg = {"architecture": "batchtopk", "d_in": widths[0], "d_sae": args.d_sae, "k": args.k}
    else:
        cfg = {"architecture": "crosscoder_batchtopk", "d_in": widths[0], "d_sae": args.d_sae, "k": args.k,
               "n_inputs": len(widths), "source_widths": widths}
    with tempfile.TemporaryDirectory() as tmp:
        dm = TensorDataModule(x, batch_size=args.batch, shuffle=False)
        _, summary = train_sae(cfg, dm, tmp, total_tokens=n, batch_size=args.batch, init_tokens=args.batch,
                               save=False, warmup_steps=0,
                               trainer_cfg={"logger": "none", "enable_progress_bar": False, "accelerator": "cpu",
                                            "devices": 1, "limit_val_batches": 0})
    return float(summary["tokens_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    runs: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.reps):
        for name, widths in CONFIGS.items():
            runs[name].append(tokens_per_s(widths, args))
    base = statistics.median(runs[next(iter(CONFIGS))])
    base_width = CONFIGS[next(iter(CONFIGS))][0]
    print(f"d_sae {args.d_sae}, k {args.k}, batch {args.batch}, {args.steps} steps, median of {args.reps}")
    print("| configuration | total width | tokens/s | cost per token vs SAE | width ratio | cost / width ratio |")
    print("|---|---|---|---|---|---|")
    for name, widths in CONFIGS.items():
        tps = statistics.median(runs[name])
        cost = base / tps
        ratio = sum(widths) / base_width
        print(f"| {name} | {sum(widths)} | {tps:,.0f} | {cost:.2f}x | {ratio:.2f}x | {cost / ratio:.2f} |")


if __name__ == "__main__":
    main()
