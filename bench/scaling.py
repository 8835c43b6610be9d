"""How training time and memory grow with dictionary size and with the size of the store.

    python bench/scaling.py                       # both sweeps, table + bench/scaling.png
    python bench/scaling.py --d-sae 4608 18432 --tokens 100000 1000000 --steps 2   # smaller

1. **d_sae sweep** (4608 ... 73728 latents, TopK k=32, batch 4096, d_in 576): seconds per
   training step (loss, backward, decoder-gradient projection, Adam, renormalisation; the
   step ``train_sae`` runs) and the peak resident memory it adds, each size in its own
   subprocess so that the peak is its own.
2. **token sweep** (1e5 ... 1e7 tokens): synthetic activations of width 576 written once as
   a bfloat16 store in the cache (1e7 tokens are 11.5 GB on disk), then streamed by
   ``core.store.ActivationDataModule``. Training all of 1e7 tokens would take hours on a
   2-core CPU, so each store size reports (a) the streaming rate, tokens/s read, shuffled
   and batched from disk over a fixed number of batches (the whole store when smaller),
   and (b) training steps/s of the d_sae-18432 TopK SAE over a fixed number of steps fed by
   that stream; peak memory is measured for both and should not grow with the store.

Synthetic activations: sparse combinations of random unit directions plus noise, so that
the numbers are activation-like; throughput does not depend on their content.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
D_IN = 576


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_store(root: Path, n_tokens: int, *, seed: int = 0, shard_tokens: int = 131_072) -> Path:
    """Write (once; resumes) a bfloat16 store of ``n_tokens`` synthetic activations."""
    from core.store import ActivationStore, ShardWriter

    if (root / "manifest.json").exists():
        try:
            if ActivationStore(root, verify=False).n_tokens == n_tokens:
                return root
        except Exception:  # noqa: BLE001  (an incomplete store resumes below)
            pass
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(4096, D_IN, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    w = ShardWriter(root, model="synthetic", hook="resid", d=D_IN, dtype="bfloat16",
                    shard_tokens=shard_tokens, meta={"source": "bench/scaling.py synthetic"})
    tokens_per_sample = 128
    done = w.samples_done * tokens_per_sample
    chunk = 65_536
    while done < n_tokens:
        n = min(chunk, n_tokens - done)
        gc = torch.Generator().manual_seed(seed * 7919 + done)
        idx = torch.randint(0, atoms.shape[0], (n, 16), generator=gc)
        coef = torch.rand(n, 16, generator=gc).pow(3) * 4
        acts = torch.nn.functional.embedding_bag(idx, atoms, per_sample_weights=coef, mode="sum")
        acts += 0.1 * torch.randn(n, D_IN, generator=gc)
        pos = torch.arange(done, done + n)
        w.add(acts, pos // tokens_per_sample, pos % tokens_per_sample, torch.zeros(n, dtype=torch.long),
              samples_done=(done + n) // tokens_per_sample)
        done += n
    w.close()
    return root


def step_fn(sae, x: torch.Tensor):
    """One full training step as ``DictionaryModule`` runs it (fused Adam)."""
    from core.training.module import DictionaryModule

    module = DictionaryModule(sae, lr=1e-4, total_steps=10)
    opt = module.configure_optimizers()["optimizer"]

    def step(batch: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        module.sae.loss(batch, dead_mask=module.dead_mask()).loss.backward()
        module.on_before_optimizer_step(opt)
        opt.step()
        module.sae.post_step()
    return step


def one_d_sae(args) -> dict:
    from core.dictionaries import build_dictionary
    from core.training.module import DictionaryModule  # noqa: F401  (imported before the baseline)

    torch.manual_seed(0)
    x = torch.randn(args.batch, D_IN)
    base = _rss_mb()
    sae = build_dictionary({"architecture": "topk", "d_in": D_IN, "d_sae": args.one_d_sae, "k": args.k})
    sae.to(args.device)
    step = step_fn(sae, x)
    x = x.to(args.device)
    step(x)
    _sync(args.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(x)
    _sync(args.device)
    s = (time.perf_counter() - t0) / args.steps
    return {"d_sae": args.one_d_sae, "step_s": s, "tokens_per_s": args.batch / s, "peak_mb": _rss_mb() - base,
            **_cuda_peak(args.device)}


def one_tokens(args) -> dict:
    from core.dictionaries import build_dictionary
    from core.store import ActivationDataModule
    from core.training.module import DictionaryModule  # noqa: F401  (imported before the baseline)

    root = Path(args.store)
    base = _rss_mb()
    dm = ActivationDataModule(root, batch_size=args.batch, verify=False, holdout_fraction=0.0)
    n_store = dm.store.n_tokens
    t0 = time.perf_counter()
    n = 0
    for i, batch in enumerate(dm.train_dataloader()):
        n += batch.shape[0]
        if i + 1 >= args.stream_batches:
            break
    stream_s = time.perf_counter() - t0
    stream_mb = _rss_mb() - base
    sae = build_dictionary({"architecture": "topk", "d_in": D_IN, "d_sae": args.train_d_sae, "k": args.k})
    sae.to(args.device)
    step = step_fn(sae, None)
    it = iter(dm.train_dataloader())
    step(next(it).float().to(args.device))
    _sync(args.device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step(next(it).float().to(args.device))
    _sync(args.device)
    train_s = (time.perf_counter() - t0) / args.steps
    return {"tokens": n_store, "stream_tokens_per_s": n / stream_s, "streamed": n, "stream_peak_mb": stream_mb,
            "train_steps_per_s": 1 / train_s, "train_tokens_per_s": args.batch / train_s,
            "train_peak_mb": _rss_mb() - base, "disk_gb": sum(p.stat().st_size for p in dm.store.shard_paths) / 1e9}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _cuda_peak(device: str) -> dict:
    return {"cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20} if device.startswith("cuda") else {}


def _sub(extra: list[str], args) -> dict:
    cmd = [sys.executable, __file__, *extra, "--batch", str(args.batch), "--k", str(args.k), "--steps", str(args.steps),
           "--threads", str(args.threads), "--device", args.device, "--stream-batches", str(args.stream_batches),
           "--train-d-sae", str(args.train_d_sae)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(d_rows: list[dict], t_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    xs = [r["d_sae"] for r in d_rows]
    ax.loglog(xs, [r["step_s"] for r in d_rows], "o-", label="seconds / step")
    ax.loglog(xs, [r["peak_mb"] / 1000 for r in d_rows], "s-", label="peak GB added")
    ax.loglog(xs, [d_rows[0]["step_s"] * x / xs[0] for x in xs], ":", color="grey", label="linear")
    ax.set_xlabel("d_sae (latents)")
    ax.set_title("TopK k=32, batch 4096, d_in 576")
    ax.legend()
    ax = axes[1]
    xs = [r["tokens"] for r in t_rows]
    ax.loglog(xs, [r["stream_tokens_per_s"] for r in t_rows], "o-", label="stream tokens/s")
    ax.loglog(xs, [r["train_tokens_per_s"] for r in t_rows], "^-", label="train tokens/s (d_sae 18432)")
    ax.loglog(xs, [max(r["stream_peak_mb"], r["train_peak_mb"]) for r in t_rows], "s-", label="peak MB added")
    ax.set_xlabel("tokens in the store (bfloat16 on disk)")
    ax.set_title("streamed from disk")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, nargs="*", default=[4608, 9216, 18432, 36864, 73728])
    p.add_argument("--tokens", type=int, nargs="*", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--stream-batches", type=int, default=100)
    p.add_argument("--train-d-sae", type=int, default=18432)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--plot", default=str(ROOT / "bench" / "scaling.png"))
    p.add_argument("--one-d-sae", type=int, help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.one_d_sae:
        print(json.dumps(one_d_sae(args)))
        return
    if args.store:
        print(json.dumps(one_tokens(args)))
        return
    sys.path.insert(0, str(ROOT))
    from core.cache import cache_dir

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {args.threads}, device {args.device}")
    d_rows = []
    print(f"{'d_sae':>7s} {'s/step':>8s} {'tokens/s':>9s} {'peak MB':>8s}")
    for d in args.d_sae:
        r = _sub(["--one-d-sae", str(d)], args)
        d_rows.append(r)
        print(f"{d:7d} {r['step_s']:8.2f} {r['tokens_per_s']:9.0f} {r['peak_mb']:8.0f}", flush=True)
    t_rows = []
    print(f"\n{'tokens':>10s} {'disk GB':>8s} {'stream tok/s':>13s} {'stream MB':>10s} "
          f"{'train steps/s':>14s} {'train tok/s':>12s} {'train MB':>9s}")
    for n in args.tokens:
        root = synthetic_store(cache_dir() / "bench_scaling" / f"synthetic_{n}", n)
        r = _sub(["--store", str(root)], args)
        t_rows.append(r)
        print(f"{n:10d} {r['disk_gb']:8.2f} {r['stream_tokens_per_s']:13.0f} {r['stream_peak_mb']:10.0f} "
              f"{r['train_steps_per_s']:14.3f} {r['train_tokens_per_s']:12.0f} {r['train_peak_mb']:9.0f}", flush=True)
    if d_rows and t_rows:
        plot(d_rows, t_rows, Path(args.plot))
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
