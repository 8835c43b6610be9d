"""Where a TopK training step's time goes, against the sparse-TopK bound (the encoder matmul alone).

    python bench/step_profile.py [--d-sae 18432 --batch 4096 --k 32 --steps 10 --threads 2]

The sparse TopK kernels leave one dense product per step: the encoder forward
``[batch, d_in] @ [d_in, d_sae]`` (the top-k needs every pre-activation). Its time alone sets
the bound: a step cannot be faster, so ``batch / t_matmul`` tokens/s is the ceiling and
``t_matmul / t_step`` the fraction of it a step reaches. This script trains through the full
Lightning path (``core.training.train_sae``, fp32, Adam, the default fast paths) on Gaussian rows,
times every step, runs ``torch.profiler`` over the steps after the first two, and prints the
operators' self time grouped by what they do, as a share of the step, beside the bound measured
in the same process (``torch.addmm`` of the same shapes into a reused tensor, median of 5).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.training import TensorDataModule, train_sae  # noqa: E402

GROUPS = (  # (group, substrings of the operator name), first match wins
    ("encoder matmul (addmm)", ("aten::addmm",)),
    ("top-k", ("aten::topk",)),
    ("sparse kernels (embedding bags, gathers)", ("embedding_bag", "aten::index", "aten::gather", "index_add",
                                                  "aten::bincount", "aten::repeat_interleave")),
    ("Adam (fused)", ("_fused_adam",)),
    ("decoder projection and renorm", ("aten::sum", "aten::mul", "aten::sub", "aten::div", "aten::norm",
                                       "linalg_vector_norm", "aten::clamp")),
    ("copies, transposes, fills", ("aten::copy_", "aten::clone", "aten::fill_", "aten::zero_", "aten::contiguous",
                                   "aten::masked_fill", "aten::to", "aten::_to_copy", "aten::empty")),
    ("elementwise and reductions", ("aten::",)),
)


def bound_seconds(batch: int, d_in: int, d_sae: int, repeats: int = 5) -> float:
    x, w, b = torch.randn(batch, d_in), torch.randn(d_in, d_sae), torch.randn(d_sae)
    out = torch.empty(batch, d_sae)
    torch.addmm(b, x, w, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.addmm(b, x, w, out=out)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Profiled(Callback):
    """Step clock for every step; ``torch.profiler`` over the steps from ``start`` on."""

    def __init__(self, start: int) -> None:
        self.start, self.marks, self.prof = start, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.start:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.__enter__()
            self.t_prof = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.marks.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        if self.prof is not None:
            self.wall = time.perf_counter() - self.t_prof
            self.prof.__exit__(None, None, None)


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=18432)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12, help="operators listed one by one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.steps * args.batch, args.d_in, generator=torch.Generator().manual_seed(0))
    cb = Profiled(start=2)
    with tempfile.TemporaryDirectory() as tmp:
        train_sae(dict(architecture="topk", d_in=args.d_in, d_sae=args.d_sae, k=args.k),
                  TensorDataModule(x, batch_size=args.batch, shuffle=False), tmp, total_tokens=x.shape[0],
                  batch_size=args.batch, init_tokens=args.batch, save=False, callbacks=[cb],
                  trainer_cfg=dict(logger="none", enable_progress_bar=False, accelerator="cpu", devices=1,
                                   limit_val_batches=0, precision="32-true", checkpoint_every_n_steps=10**9))
    gaps = [b - a for a, b in zip(cb.marks, cb.marks[1:], strict=False)][1:]
    t_step = statistics.median(gaps)
    t_bound = bound_seconds(args.batch, args.d_in, args.d_sae)
    n_prof = args.steps - cb.start
    per_op = defaultdict(float)
    for ev in cb.prof.key_averages():
        per_op[ev.key] += ev.self_cpu_time_total / 1e6 / n_prof
    groups = defaultdict(float)
    for name, sec in per_op.items():
        groups[group_of(name)] += sec
    profiled_step = cb.wall / n_prof
    ops_total = sum(per_op.values())
    print(f"# d_in {args.d_in}, d_sae {args.d_sae}, batch {args.batch}, k {args.k}, {args.threads} threads, "
          f"fp32, Lightning path, torch {torch.__version__}")
    print(f"step (median of {len(gaps)}, unprofiled clock): {t_step * 1e3:.0f} ms = {args.batch / t_step:,.0f} tokens/s")
    print(f"bound: encoder addmm alone {t_bound * 1e3:.0f} ms "
          f"({2 * args.batch * args.d_in * args.d_sae / t_bound / 1e9:.0f} GFLOP/s) = {args.batch / t_bound:,.0f} tokens/s")
    print(f"fraction of the bound: {t_bound / t_step:.2f}")
    print(f"profiled steps: {profiled_step * 1e3:.0f} ms each; operators' self time {ops_total * 1e3:.0f} ms "
          f"(the rest, {max(0.0, profiled_step - ops_total) * 1e3:.0f} ms, is Python and Lightning outside operators)")
    print(f"{'group':44s} {'ms/step':>8s} {'share':>6s}")
    for g, sec in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"{g:44s} {sec * 1e3:8.1f} {sec / profiled_step:6.1%}")
    print(f"{'outside operators':44s} {max(0.0, profiled_step - ops_total) * 1e3:8.1f} "
          f"{max(0.0, profiled_step - ops_total) / profiled_step:6.1%}")
    print(f"\n{'operator':52s} {'ms/step':>8s}")
    for name, sec in sorted(per_op.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{name[:52]:52s} {sec * 1e3:8.1f}")


if __name__ == "__main__":
    main()
