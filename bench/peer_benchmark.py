"""Training speed, memory and quality against SAELens, dictionary_learning and sparsify, in one run.

    bash bench/peers/setup.sh                 # once: the peers' own venv (torch stays 2.13.0)
    python bench/peer_benchmark.py            # prints the tables (about an hour on 2 CPUs)
    python bench/peer_benchmark.py --steps 8 --d-sae 4608 --reps 1   # a quick look
    python bench/peer_benchmark.py --precision fp32 bf16              # both precisions, one run
    python bench/peer_benchmark.py --lr-grid 1e-3 3e-3 1e-2           # + every library at one lr grid

Every library trains the same architecture on the same cached activations: SmolLM2-135M's
residual stream (d_in 576, ``blocks.15.hook_resid_post``) harvested by sparsescope from
real English text (docstrings of the Python standard library, read from its sources; each
paragraph's first token, an attention sink with ~140x the norm of the rest, left out), for
the same number of tokens at batch 4096 on the CPU. Each (library, configuration) runs in its
own subprocess so peak memory is its own; runs are interleaved A B C D A B C D so that drift of
the machine cancels.

Timing, the same for every library (``bench/peer_runners.py``): the clock starts with the
training tokens in memory and the library imported, before any of its initialisation, and
stops after its last optimiser step. "whole" is tokens over that time (our Lightning set-up,
the geometric median and the encoder-scale fit included, as the peers' initialisation is);
"steady" is the batch over the median step time after the first two steps. Both are printed
as the median over repetitions with [min-max]. FVU is measured on held-out tokens after training.

``--precision bf16``: every library's forward and backward run under bf16 autocast (ours through
Lightning's ``bf16-mixed``, the peers by the benchmark's ``torch.autocast`` around the step it
drives); the header says whether the CPU has bf16 matrix units (without them bf16 is emulated,
~100x slower). Ratios compare runs of the same precision only.

What each library runs is its own training step: sparsify's ``SparseCoder.forward`` with
its default optimiser (sign-SGD in a schedule-free wrapper) and its decoder-gradient
projection; dictionary_learning's ``TopKTrainer.update`` / ``StandardTrainer.update``;
SAELens's ``training_forward_pass`` with Adam and gradient clipping as its trainer does;
ours is ``core.training.train_sae`` (Lightning, the full training path), once with its default
optimiser (Adam, decayed over the last 20%) and once (``sparsescope+signum``, TopK only) with
``trainer.optimizer=signum``, the same optimiser family as sparsify's. Warm-ups are set to zero
for every library so that FVU after a short run compares like with like. The first table runs
each library at its own default lr; ``--lr-grid`` adds a second with every library (ours too)
at each lr of one shared grid, the best lr chosen on the first half of the held-out tokens and
FVU reported on the second half, so that FVU compares libraries rather than learning rates.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from peer_runners import RELU_L1, RUNNERS, preload  # noqa: E402

PEERS_PY = ROOT / "bench" / "peers" / ".venv" / "bin" / "python"
HOOK = "blocks.15.hook_resid_post"
LIBS = ("sparsescope", "sparsescope+signum", "sparsify", "dictionary_learning", "sae_lens")
OURS = {"sparsescope": "adam", "sparsescope+signum": "signum"}  # our rows: library name -> trainer.optimizer


def machine(device: str) -> str:
    """The card, or the CPU model with its cores and whether it has bf16 matrix units."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    sys.path.insert(0, str(ROOT))
    from core.training.precision import cpu_bf16_units

    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "CPU"
    units = cpu_bf16_units()
    bf16 = f"bf16 matrix units: {', '.join(units)}" if units else "no bf16 matrix units (bf16 emulated)"
    return f"{model}, {os.cpu_count()} CPUs, capability {torch.backends.cpu.get_cpu_capability()}, {bf16}"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- data

def prepare(cache: Path, n_tokens: int) -> Path:
    """Harvest (once) and return a safetensors file of activations [n, 576], shuffled.

    Each paragraph's first token is left out (``positions="skip_first"``): SmolLM2 parks an
    attention sink there with a norm of ~24,000 against ~170 for every other token, so 0.8%
    of the tokens would carry 99% of the variance and FVU would measure only those.
    """
    from safetensors.torch import save_file

    out = cache / f"peer_bench_{HOOK}_skipfirst_{n_tokens}.safetensors"
    if out.exists():
        return out
    from core.adapters import load_adapter
    from core.harvest import harvest
    from core.samples import Sample
    from core.store import ActivationStore
    from domains.text.corpus import stdlib_paragraphs

    texts = stdlib_paragraphs(20000)
    adapter = load_adapter(ROOT / "conf" / "model" / "smollm2.yaml")
    samples = [Sample(f"doc{i}", t) for i, t in enumerate(texts)]
    est = int(n_tokens / 100) + 50  # ~120 tokens per paragraph
    with tempfile.TemporaryDirectory() as tmp:
        harvest(adapter, samples[:est], [HOOK], tmp, batch_tokens=4096, positions="skip_first")
        acts = ActivationStore(Path(tmp) / HOOK).load(columns=("acts",))["acts"]
    if acts.shape[0] < n_tokens:
        sys.exit(f"only {acts.shape[0]:,} tokens from {min(est, len(samples))} stdlib paragraphs, "
                 f"{n_tokens:,} needed: lower --steps or --train-tokens")
    g = torch.Generator().manual_seed(0)
    acts = acts[torch.randperm(acts.shape[0], generator=g)][:n_tokens].contiguous()
    save_file({"acts": acts}, str(out))
    return out


# ---------------------------------------------------------------- workers

def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def steady_seconds(marks: list[float]) -> float:
    """Median step time after the first two steps (all steps when there are few)."""
    gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return statistics.median(gaps[2:] if len(gaps) >= 4 else gaps or [float("nan")])


def worker(args) -> dict:
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    acts = load_file(args.data)["acts"].float()  # a store carried to a GPU machine may be fp16
    n_train = args.steps * args.batch
    held = acts[-args.eval_tokens:]
    distinct = acts[:acts.shape[0] - args.eval_tokens]
    # more steps than harvested training tokens: every library cycles through them in the same order
    train = distinct.repeat(-(-n_train // distinct.shape[0]), 1)[:n_train].contiguous()
    if args.lib in OURS and OURS[args.lib] != "adam" and args.arch != "topk":
        return {"lib": args.lib, "skipped": f"{OURS[args.lib]} is benchmarked on TopK only"}
    RELU_L1.update(dict(args.l1 or {}))
    preload(args.lib)
    base = _rss_mb()
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    lr = args.run_lr or (args.lr if args.lib == "sparsescope" else None)
    extra = {"optimizer": OURS[args.lib]} if args.lib in OURS else {}
    t0 = time.perf_counter()
    predict, marks = RUNNERS[args.lib](args.arch, args.d_sae, args.k, train, args.batch, args.steps,
                                       args.device, args.precision == "bf16", lr=lr, **extra)
    if predict is None:
        return {"lib": args.lib, "skipped": f"{args.lib} has no {args.arch} SAE"}
    seconds = marks[-1] - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb() - base
    x_hat, l0 = predict(held)
    x_hat = x_hat.float().cpu()
    half = held.shape[0] // 2
    return {"lib": args.lib, "tokens_per_s": n_train / seconds, "seconds": seconds,
            "first_step_s": marks[0] - t0, "steady_tokens_per_s": args.batch / steady_seconds(marks),
            "peak_mb": peak, "fvu": fvu(held, x_hat), "fvu_valid": fvu(held[:half], x_hat[:half]),
            "fvu_test": fvu(held[half:], x_hat[half:]), "l0": l0}


# ---------------------------------------------------------------- orchestration

def _lib_value(text: str) -> tuple[str, float]:
    lib, _, value = text.partition("=")
    if lib not in RELU_L1 or not value:
        raise argparse.ArgumentTypeError(f"expected LIB=COEF with LIB in {sorted(RELU_L1)}, got {text!r}")
    return lib, float(value)


def run_one(lib: str, args, d_sae: int, arch: str, precision: str, lr: float | None = None) -> dict:
    py = sys.executable if lib in OURS else args.peers_python
    cmd = [py, __file__, "--worker", "--lib", lib, "--arch", arch, "--d-sae", str(d_sae), "--k", str(args.k),
           "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads),
           "--data", str(args.data), "--eval-tokens", str(args.eval_tokens), "--device", args.device,
           "--precision", precision]
    cmd += ["--lr", str(args.lr)] if args.lr else []
    cmd += ["--run-lr", str(lr)] if lr else []
    cmd += ["--l1", *[f"{k}={v}" for k, v in args.l1]] if args.l1 else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"lib": lib, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> str:
    """``median [min-max]`` of tokens/s."""
    return f"{statistics.median(values):7.0f} [{min(values):.0f}-{max(values):.0f}]"


def print_defaults(arch: str, d_sae: int, precision: str, runs: dict[str, list[dict]]) -> None:
    """One block of the first table: every library at its default lr, ratios to our Adam row."""
    med = {lib: {key: statistics.median(r[key] for r in rs if "tokens_per_s" in r)
                 for key in ("tokens_per_s", "steady_tokens_per_s")}
           for lib, rs in runs.items() if any("tokens_per_s" in r for r in rs)}
    ours = med.get("sparsescope")
    for lib, rs in runs.items():
        good = [r for r in rs if "tokens_per_s" in r]
        if not good:
            print(f"{arch:5s} {d_sae:6d} {precision:5s} {lib:20s} {rs[-1].get('skipped') or rs[-1].get('error')}")
            continue
        ratio = ratio_s = ""
        if ours and lib not in OURS:
            ratio = f"{ours['tokens_per_s'] / med[lib]['tokens_per_s']:.2f}x"
            ratio_s = f"{ours['steady_tokens_per_s'] / med[lib]['steady_tokens_per_s']:.2f}x"
        l0 = f"{good[-1]['l0']:.1f}" if good[-1].get("l0") is not None else "-"
        print(f"{arch:5s} {d_sae:6d} {precision:5s} {lib:20s} {spread([r['tokens_per_s'] for r in good]):>22s} "
              f"{spread([r['steady_tokens_per_s'] for r in good]):>22s} {max(r['peak_mb'] for r in good):8.0f} "
              f"{good[-1]['fvu']:7.3f} {l0:>6s} {ratio:>7s} {ratio_s:>7s}", flush=True)


def print_grid(arch: str, d_sae: int, precision: str, grid: list[float], runs: dict[str, dict[float, dict]]) -> None:
    """The second table: FVU per lr (valid half), the best lr, its FVU on the test half and speed."""
    for lib, by_lr in runs.items():
        cells = [f"{by_lr[lr]['fvu_valid']:.3f}" if "fvu_valid" in by_lr[lr] else "-" for lr in grid]
        good = {lr: r for lr, r in by_lr.items() if "fvu_valid" in r}
        if not good:
            print(f"{arch:5s} {d_sae:6d} {precision:5s} {lib:20s} {next(iter(by_lr.values())).get('error', '-')}")
            continue
        best = min(good, key=lambda lr: good[lr]["fvu_valid"])
        r = good[best]
        print(f"{arch:5s} {d_sae:6d} {precision:5s} {lib:20s} {' '.join(f'{c:>7s}' for c in cells)} {best:8.0e} "
              f"{r['fvu_test']:8.3f} {r['tokens_per_s']:8.0f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, nargs="*", default=[4608, 18432])
    p.add_argument("--arch", nargs="*", default=["topk", "relu"])
    p.add_argument("--libs", nargs="*", default=list(LIBS))
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--reps-of", nargs="*", default=[], metavar="LIB=N",
                   help="fewer repetitions for slow libraries, e.g. dictionary_learning=1 (still interleaved)")
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--train-tokens", type=int, default=131072,
                   help="distinct harvested training tokens (cycled when steps x batch is larger); 0 = no cycling")
    p.add_argument("--lr", type=float, default=None,
                   help="our Adam learning rate in the first table (default: core.training.module.default_lr)")
    p.add_argument("--lr-grid", type=float, nargs="*", default=[],
                   help="a second table: every library at each of these learning rates (one run each)")
    p.add_argument("--no-defaults", action="store_true", help="skip the first table (with --lr-grid)")
    p.add_argument("--l1", nargs="*", type=_lib_value, metavar="LIB=COEF",
                   help=f"ReLU L1 coefficients per library (default {RELU_L1})")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:N]; every library trains on it")
    p.add_argument("--precision", nargs="*", default=["fp32"], choices=["fp32", "bf16"],
                   help="bf16: every library under bf16 autocast (ours: Lightning bf16-mixed)")
    p.add_argument("--bf16", action="store_true", help="same as --precision bf16")
    p.add_argument("--peers-python", default=str(PEERS_PY),
                   help="the interpreter that has the peers installed (default: bench/peers/.venv)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--data", help="a safetensors file with `acts` [n, d] to use instead of the SmolLM2 harvest")
    p.add_argument("--run-lr", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.arch, args.d_sae, args.precision = args.arch[0], args.d_sae[0], args.precision[0]
        print(json.dumps(worker(args)))
        return
    precisions = ["bf16"] if args.bf16 else args.precision
    if set(args.libs) - set(OURS) and not Path(args.peers_python).exists() and not shutil.which(args.peers_python):
        sys.exit(f"peers' interpreter {args.peers_python} missing: run `bash bench/peers/setup.sh` first")
    sys.path.insert(0, str(ROOT))
    from core.cache import cache_dir

    n_harvest = min(args.steps * args.batch, args.train_tokens or args.steps * args.batch)
    args.data = args.data or prepare(cache_dir(), n_harvest + args.eval_tokens)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {machine(args.device)} | torch {torch.__version__}, "
          f"threads {args.threads} | SmolLM2-135M {HOOK}, {args.steps * args.batch:,} training tokens"
          f"{f' ({n_harvest:,} distinct, cycled)' if n_harvest < args.steps * args.batch else ''}"
          f", batch {args.batch}, k {args.k}, our Adam lr {args.lr or 'default'}")
    if "bf16" in precisions:
        print("# bf16: ours Lightning bf16-mixed; sparsify, dictionary_learning, SAELens: torch.autocast"
              f"({args.device.split(':')[0]}, bfloat16) around the forward and backward the benchmark drives")
    if not args.no_defaults:
        print(f"{'arch':5s} {'d_sae':>6s} {'prec':5s} {'library':20s} {'whole tok/s [min-max]':>22s} "
              f"{'steady tok/s [min-max]':>22s} {'peak MB':>8s} {'FVU':>7s} {'L0':>6s} {'whole':>7s} {'steady':>7s}")
        for arch in args.arch:
            for d_sae in args.d_sae:
                for precision in precisions:
                    runs: dict[str, list[dict]] = {lib: [] for lib in args.libs}
                    reps_of = {k: int(v) for k, _, v in (t.partition("=") for t in args.reps_of)}
                    for rep in range(args.reps):
                        for lib in args.libs:
                            if rep < reps_of.get(lib, args.reps):
                                runs[lib].append(run_one(lib, args, d_sae, arch, precision))
                    print_defaults(arch, d_sae, precision, runs)
    if args.lr_grid:
        print(f"# shared lr grid: FVU on the first {args.eval_tokens // 2:,} held-out tokens per lr, best lr, "
              f"FVU on the other {args.eval_tokens - args.eval_tokens // 2:,} at it, whole-run tok/s at it")
        print(f"{'arch':5s} {'d_sae':>6s} {'prec':5s} {'library':20s} "
              f"{' '.join(f'{lr:7.0e}' for lr in args.lr_grid)} {'best lr':>8s} {'FVU test':>8s} {'tok/s':>8s}")
        for arch in args.arch:
            for d_sae in args.d_sae:
                for precision in precisions:
                    grid_runs: dict[str, dict[float, dict]] = {lib: {} for lib in args.libs}
                    for lr in args.lr_grid:
                        for lib in args.libs:
                            grid_runs[lib][lr] = run_one(lib, args, d_sae, arch, precision, lr=lr)
                    print_grid(arch, d_sae, precision, args.lr_grid, grid_runs)


if __name__ == "__main__":
    main()
