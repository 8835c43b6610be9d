"""Per-layer transcoder training speed and held-out FVU: ours against sparsify's ``--transcode``, in one run.

    bash bench/peers/setup.sh                  # once: the peers' venv (torch stays 2.13.0)
    python bench/transcoder_benchmark.py       # about 15 minutes on 2 CPUs
    python bench/transcoder_benchmark.py --steps 8 --reps 1   # a quick look

Both train a TopK transcoder of the same shape (d_in 576 -> d_sae latents -> 576, the same k,
batch 4096, fp32 on the CPU) that predicts SmolLM2-135M's ``blocks.{layer}.hook_mlp_out`` from
its ``hook_mlp_in`` on the same tokens (Python standard-library docstrings, harvested in one
pass by sparsescope, each text's first token left out), in the same order. Each run is its own
subprocess; runs are interleaved and tokens/s is the median over repetitions. FVU is measured
on held-out tokens after training.

sparsify runs what its trainer runs for ``--transcode``: ``SparseCoder(transcode=True)`` (zero
decoder, no decoder normalisation), the encoder bias set so pre-activations start centred
(``-mean(x) @ W_enc``) and ``b_dec`` at the mean target on the first batch, ``out.fvu`` as the
loss (AuxK off, its default), sign-SGD in a schedule-free wrapper at ``5e-3 / sqrt(d_sae / 2**14)``.
Ours is ``core.training.train_sae`` (the full Lightning path) with ``sae.transcoder=true``, once
with its default optimiser (Adam) and once with ``signum``, sparsify's optimiser family.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.peer_benchmark import PEERS_PY, fvu, machine  # noqa: E402

LIBS = ("sparsescope", "sparsescope+signum", "sparsify")


def prepare(cache: Path, layer: int, n_tokens: int) -> Path:
    """Harvest (once) the MLP input and output of ``layer`` and cache them shuffled together."""
    from safetensors.torch import save_file

    out = cache / f"transcoder_bench_L{layer}_{n_tokens}.safetensors"
    if out.exists():
        return out
    from core.adapters import load_adapter
    from core.harvest import harvest, mlp_pair_hooks
    from domains.text.corpus import docstring_samples

    adapter = load_adapter(ROOT / "conf" / "model" / "smollm2.yaml")
    hooks = mlp_pair_hooks([layer], adapter.n_layers)
    samples = docstring_samples(min(2400, n_tokens // 100 + 50))
    with tempfile.TemporaryDirectory() as tmp:
        stores = harvest(adapter, samples, hooks, tmp, batch_tokens=4096, positions="skip_first")
        x, y = (stores[h].load(("acts",))["acts"] for h in hooks)
    if x.shape[0] < n_tokens:
        sys.exit(f"only {x.shape[0]:,} tokens harvested, {n_tokens:,} needed: lower --steps or --train-tokens")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:n_tokens]
    save_file({"x": x[perm].contiguous(), "y": y[perm].contiguous()}, str(out))
    return out


def run_sparsescope(x, y, args, optimizer: str):
    from core.training import TensorDataModule, train_sae

    cfg = {"architecture": "topk", "d_in": x.shape[1], "d_sae": args.d_sae, "k": args.k, "transcoder": True}
    with tempfile.TemporaryDirectory() as tmp:
        data = TensorDataModule(x, y, batch_size=args.batch, shuffle=False)
        tc, summary = train_sae(cfg, data, tmp, total_tokens=x.shape[0], batch_size=args.batch, optimizer=optimizer,
                                init_tokens=args.batch, save=False, warmup_steps=0,
                                trainer_cfg={"logger": "none", "enable_progress_bar": False, "accelerator": "cpu",
                                             "devices": 1, "limit_val_batches": 0, "checkpoint_every_n_steps": 10**9})
    tc.eval()
    return (lambda v: tc(v)), summary["seconds"]


def run_sparsify(x, y, args):
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    tc = SparseCoder(x.shape[1], SparseCoderConfig(num_latents=args.d_sae, k=args.k, transcode=True))
    opt = ScheduleFreeWrapper(SignSGD(tc.parameters(), lr=5e-3 / (args.d_sae / 2**14) ** 0.5), momentum=0.95)
    opt.train()
    t0 = time.perf_counter()
    for i in range(args.steps):
        xb, yb = x[i * args.batch:(i + 1) * args.batch], y[i * args.batch:(i + 1) * args.batch]
        if i == 0:
            tc.encoder.bias.data = -xb.mean(0) @ tc.encoder.weight.data.T
            tc.b_dec.data = yb.mean(0)
        out = tc(xb, yb)
        out.fvu.backward()
        opt.step()
        opt.zero_grad()
    seconds = time.perf_counter() - t0
    opt.eval()
    return (lambda v: tc(v).sae_out), seconds


def worker(args) -> dict:
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_file(args.data)
    n_train = args.steps * args.batch
    held_x, held_y = data["x"][-args.eval_tokens:], data["y"][-args.eval_tokens:]
    x, y = data["x"][:n_train], data["y"][:n_train]
    if args.lib == "sparsify":
        predict, seconds = run_sparsify(x, y, args)
    else:
        predict, seconds = run_sparsescope(x, y, args, "signum" if args.lib.endswith("signum") else "adam")
    with torch.no_grad():
        y_hat = torch.cat([predict(held_x[i:i + 4096]).float() for i in range(0, len(held_x), 4096)])
    return {"lib": args.lib, "tokens_per_s": n_train / seconds, "seconds": seconds, "fvu": fvu(held_y, y_hat)}


def run_one(lib: str, args) -> dict:
    py = args.peers_python if lib == "sparsify" else sys.executable
    cmd = [py, __file__, "--worker", "--lib", lib, "--data", str(args.data), "--d-sae", str(args.d_sae),
           "--k", str(args.k), "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads),
           "--eval-tokens", str(args.eval_tokens)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"lib": lib, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--libs", nargs="*", default=list(LIBS))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--peers-python", default=str(PEERS_PY))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if "sparsify" in args.libs and not Path(args.peers_python).exists():
        sys.exit(f"peers' interpreter {args.peers_python} missing: run `bash bench/peers/setup.sh` first")
    from core.cache import cache_dir

    args.data = prepare(cache_dir(), args.layer, args.steps * args.batch + args.eval_tokens)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {machine('cpu')}, torch {torch.__version__}, "
          f"threads {args.threads} | SmolLM2-135M blocks.{args.layer}.hook_mlp_in -> hook_mlp_out, "
          f"{args.steps * args.batch:,} training tokens, d_sae {args.d_sae}, k {args.k}, batch {args.batch}")
    runs: dict[str, list[dict]] = {lib: [] for lib in args.libs}
    for _ in range(args.reps):
        for lib in args.libs:
            runs[lib].append(run_one(lib, args))
    rows = {}
    for lib, rs in runs.items():
        good = [r for r in rs if "tokens_per_s" in r]
        rows[lib] = ({"tokens_per_s": statistics.median(r["tokens_per_s"] for r in good), "fvu": good[-1]["fvu"]}
                     if good else rs[-1])
    peer = rows.get("sparsify", {}).get("tokens_per_s")
    print(f"{'library':20s} {'tokens/s':>9s} {'held-out FVU':>12s} {'vs sparsify':>11s}")
    for lib, r in rows.items():
        if "tokens_per_s" not in r:
            print(f"{lib:20s} {r.get('error')}")
            continue
        ratio = f"{r['tokens_per_s'] / peer:.2f}x" if peer and lib != "sparsify" else ""
        print(f"{lib:20s} {r['tokens_per_s']:9.0f} {r['fvu']:12.3f} {ratio:>11s}", flush=True)


if __name__ == "__main__":
    main()
