"""Held-out FVU of bf16 against fp32 TopK training, with bf16's arithmetic emulated where the CPU has no bf16 units.

    python bench/bf16_fvu.py [--d-sae 4608 18432 --steps 32 128]
    python bench/bf16_fvu.py --real      # true bf16 autocast (bf16-mixed): only on CPUs with bf16 units

Under ``trainer.precision=bf16-mixed`` the only product of our sparse TopK step that autocast
lowers to bf16 is the encoder's ``addmm`` (the embedding-bag kernels, the loss and the optimiser
are not on autocast's bf16 list and stay fp32). Its arithmetic is: operands rounded to bf16,
products accumulated in fp32, the result (bias added) rounded to bf16. On a CPU without bf16 units
a real bf16 run is ~100x slower than fp32, so by default this script emulates exactly that
rounding (``addmm`` of the bf16-rounded operands in fp32, output rounded to bf16; only the order of
summation can differ: on a 256 x 576 x 512 product the emulation equals CPU autocast's output in
99.98% of entries, the rest one bf16 ulp apart) and trains each configuration through the full
Lightning path on the peer benchmark's SmolLM2 activations (``bench/peer_benchmark.py`` caches
them), held-out FVU on its 8,192 held-out tokens. Each run is its own subprocess.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def emulate_bf16_encoder() -> None:
    """Make the TopK family's encoder product round like bf16 autocast (see the module docstring)."""
    from core.dictionaries.topk import TopKFamily

    def encoder_preactivation(self, xin: torch.Tensor) -> torch.Tensor:
        def r(t):
            return t.bfloat16().float()
        return torch.addmm(r(self.b_enc), r(xin), r(self.W_enc)).bfloat16()
    TopKFamily.encoder_preactivation = encoder_preactivation


def worker(args) -> dict:
    from safetensors.torch import load_file

    from core.training import TensorDataModule, train_sae

    torch.set_num_threads(args.threads)
    if args.mode == "bf16-emulated":
        emulate_bf16_encoder()
    acts = load_file(args.data)["acts"].float()
    held, distinct = acts[-args.eval_tokens:], acts[:-args.eval_tokens]
    n = args.steps * args.batch
    train = distinct.repeat(-(-n // distinct.shape[0]), 1)[:n].contiguous()
    with tempfile.TemporaryDirectory() as tmp:
        sae, summary = train_sae(dict(architecture="topk", d_in=train.shape[1], d_sae=args.d_sae, k=args.k),
                                 TensorDataModule(train, batch_size=args.batch, shuffle=False), tmp,
                                 total_tokens=n, batch_size=args.batch, init_tokens=args.batch, save=False,
                                 trainer_cfg=dict(logger="none", enable_progress_bar=False, accelerator="cpu",
                                                  devices=1, limit_val_batches=0, checkpoint_every_n_steps=10**9,
                                                  precision="bf16-mixed" if args.mode == "bf16" else "32-true"))
    with torch.no_grad():
        x_hat = sae(held)
    fvu = float((held - x_hat).pow(2).sum() / (held - held.mean(0)).pow(2).sum())
    return {"fvu": fvu, "tokens_per_s": summary["tokens_per_s"], "precision": summary["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-sae", type=int, nargs="*", default=[4608, 18432])
    ap.add_argument("--steps", type=int, nargs="*", default=[32, 128])
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--real", action="store_true", help="true bf16 autocast instead of the emulation")
    ap.add_argument("--data", help="safetensors with `acts` (default: the peer benchmark's cached harvest)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.d_sae, args.steps = args.d_sae[0], args.steps[0]
        print(json.dumps(worker(args)))
        return
    if not args.data:
        sys.path.insert(0, str(ROOT / "bench"))
        from peer_benchmark import prepare

        from core.cache import cache_dir
        args.data = str(prepare(cache_dir(), 131072 + args.eval_tokens))
    low = "bf16" if args.real else "bf16-emulated"
    print(f"# TopK k {args.k}, batch {args.batch}, {args.threads} threads, SmolLM2 blocks.15 (131,072 distinct "
          f"tokens, cycled), our default Adam; {low} vs fp32; held-out FVU on {args.eval_tokens:,} tokens")
    print(f"{'d_sae':>6s} {'steps':>6s} {'tokens':>9s} {'FVU fp32':>9s} {'FVU ' + low:>18s} {'gap':>8s}")
    for d_sae in args.d_sae:
        for steps in args.steps:
            res = {}
            for mode in ("fp32", low):
                cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--d-sae", str(d_sae), "--steps",
                       str(steps), "--k", str(args.k), "--batch", str(args.batch), "--threads", str(args.threads),
                       "--eval-tokens", str(args.eval_tokens), "--data", args.data]
                out = subprocess.run(cmd, capture_output=True, text=True)
                res[mode] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
                if res[mode] is None:
                    print(f"{d_sae:6d} {steps:6d} {mode} failed: {out.stderr.strip().splitlines()[-1:]}")
            if all(res.values()):
                a, b = res["fp32"]["fvu"], res[low]["fvu"]
                print(f"{d_sae:6d} {steps:6d} {steps * args.batch:9,d} {a:9.4f} {b:18.4f} {b - a:+8.4f}", flush=True)


if __name__ == "__main__":
    main()
