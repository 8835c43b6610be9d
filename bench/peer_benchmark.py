"""Training speed, memory and quality against SAELens, dictionary_learning and sparsify, in one run.

    bash bench/peers/setup.sh                 # once: the peers' own venv (torch stays 2.13.0)
    python bench/peer_benchmark.py            # prints the table (about an hour on 2 CPUs)
    python bench/peer_benchmark.py --steps 8 --d-sae 4608 --reps 1   # a quick look

Every library trains the same architecture on the same cached activations: SmolLM2-135M's
residual stream (d_in 576, ``blocks.15.hook_resid_post``) harvested by sparsescope from
real English text (docstrings of the Python standard library, read from its sources; each
paragraph's first token, an attention sink with ~140x the norm of the rest, left out), for
the same number of tokens at batch 4096, fp32 on the CPU. Each (library, configuration)
runs in its own subprocess so peak memory is its own; runs are interleaved A B C D A B C D
so that drift of the machine cancels; tokens/s is the median over repetitions. FVU is
measured on held-out tokens of the same store after training.

What each library runs is its own training step: sparsify's ``SparseCoder.forward`` with
its default optimiser (sign-SGD in a schedule-free wrapper) and its decoder-gradient
projection; dictionary_learning's ``TopKTrainer.update`` / ``StandardTrainer.update``;
SAELens's ``training_forward_pass`` with Adam and gradient clipping as its trainer does;
ours is ``core.training.train_sae`` (Lightning, the full training path), once with its default
optimiser (Adam, decayed over the last 20%) and once (``sparsescope+signum``, TopK only) with
``trainer.optimizer=signum``, the same optimiser family as sparsify's. Warm-ups are set to zero
for every library so that FVU after a short run compares like with like.
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
PEERS_PY = ROOT / "bench" / "peers" / ".venv" / "bin" / "python"
HOOK = "blocks.15.hook_resid_post"
LIBS = ("sparsescope", "sparsescope+signum", "sparsify", "dictionary_learning", "sae_lens")
OURS = {"sparsescope": "adam", "sparsescope+signum": "signum"}  # our rows: library name -> trainer.optimizer
# Each library's L1 coefficient, in its own units, for about the same L0 (~230 active latents) at
# d_sae 4608 after 32 steps of 4096 tokens: ours 0.05/0.08/0.12/0.2 gave L0 794/227/4.6/0.6,
# dictionary_learning 5/20/60 gave 1978/500/81, SAELens 5/20/60 gave 3822/1608/135 (bench/README.md).
RELU_L1 = {"sparsescope": 0.08, "dictionary_learning": 32.0, "sae_lens": 48.0}


def machine(device: str) -> str:
    """The card or the CPU model, for the table's header."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "CPU"
    return f"{model}, {os.cpu_count()} CPUs"


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

def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fvu(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    return float((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def run_sparsescope(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False, lr=None, optimizer="adam"):
    from core.training import TensorDataModule, train_sae

    cfg = {"architecture": arch, "d_in": train.shape[1], "d_sae": d_sae}
    cfg.update({"k": k} if arch == "topk" else {"l1_coefficient": RELU_L1["sparsescope"]})
    with tempfile.TemporaryDirectory() as tmp:
        data = TensorDataModule(train[:steps * batch], batch_size=batch, shuffle=False)  # batches are views
        sae, summary = train_sae(cfg, data, tmp, total_tokens=steps * batch, batch_size=batch, lr=lr,
                                 optimizer=optimizer,
                                 init_tokens=batch, save=False, warmup_steps=0,
                                 trainer_cfg={"logger": "none", "enable_progress_bar": False,
                                              "accelerator": "gpu" if device.startswith("cuda") else "cpu",
                                              "devices": 1, "limit_val_batches": 0,
                                              "precision": "bf16-mixed" if bf16 else "32-true",
                                              "checkpoint_every_n_steps": 10**9})

    def predict(x):
        with torch.no_grad():
            f = sae.eval().encode(x)
            return sae.decode(f), float((f > 0).float().sum(1).mean())
    return predict, summary["seconds"]


def run_sparsify(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False):
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    if arch != "topk":
        return None, None
    sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=d_sae, k=k), device=device)
    lr = 5e-3 / (d_sae / 2**14) ** 0.5
    opt = ScheduleFreeWrapper(SignSGD(sae.parameters(), lr=lr), momentum=0.95)
    opt.train()
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    t0 = time.perf_counter()
    for i in range(steps):
        x = train[i * batch:(i + 1) * batch].to(device)
        if i == 0:
            sae.b_dec.data = x.mean(0)
            sae.set_decoder_norm_to_unit_norm()
        out = sae(x, dead_mask=since_fired > 10_000_000)
        (out.fvu + out.auxk_loss / 32).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        since_fired += x.shape[0]
        since_fired[out.latent_indices.flatten().unique()] = 0
    _sync(device)
    seconds = time.perf_counter() - t0
    opt.eval()

    def predict(x):
        with torch.no_grad():
            return sae(x.to(device)).sae_out.float().cpu(), float(k)
    return predict, seconds


def _import_dictionary_learning():
    """Load its trainers without the package ``__init__``, which imports nnsight for buffers."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("dictionary_learning")
    pkg = types.ModuleType("dictionary_learning")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["dictionary_learning"] = pkg
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer
    return TopKTrainer, StandardTrainer


def run_dictionary_learning(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False):
    TopKTrainer, StandardTrainer = _import_dictionary_learning()
    common = dict(steps=steps, activation_dim=train.shape[1], dict_size=d_sae, layer=15, lm_name="smollm2",
                  device=device, seed=0, warmup_steps=0)
    if arch == "topk":
        trainer = TopKTrainer(k=k, threshold_start_step=0, **common)
    else:
        trainer = StandardTrainer(l1_penalty=RELU_L1["dictionary_learning"], sparsity_warmup_steps=None,
                                  lr=1e-4, **common)
    t0 = time.perf_counter()
    for i in range(steps):
        trainer.update(i, train[i * batch:(i + 1) * batch].to(device))
    _sync(device)
    seconds = time.perf_counter() - t0

    def predict(x):
        with torch.no_grad():
            f = trainer.ae.encode(x.to(device))
            return trainer.ae.decode(f).cpu(), float((f > 0).float().sum(1).mean())
    return predict, seconds


def run_sae_lens(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    common = dict(d_in=train.shape[1], d_sae=d_sae, dtype="float32", device=device)
    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(k=k, **common))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=RELU_L1["sae_lens"], **common))
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (d_sae / 2**14) ** 0.5 if arch == "topk" else 1e-4)
    coeffs = {name: c.value if hasattr(c, "value") else c for name, c in sae.get_coefficients().items()}
    since_fired = torch.zeros(d_sae, device=device)
    t0 = time.perf_counter()
    for i in range(steps):
        x = train[i * batch:(i + 1) * batch].to(device)
        sae.train()
        out = sae.training_forward_pass(TrainStepInput(sae_in=x, coefficients=coeffs,
                                                       dead_neuron_mask=since_fired > 1000,
                                                       n_training_steps=i, is_logging_step=False))
        with torch.no_grad():
            since_fired += 1
            since_fired[out.feature_acts.bool().any(0)] = 0
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    _sync(device)
    seconds = time.perf_counter() - t0

    def predict(x):
        sae.eval()
        with torch.no_grad():
            f = sae.encode(x.to(device))
            return sae.decode(f).cpu(), float((f > 0).float().sum(1).mean())
    return predict, seconds


def worker(args) -> dict:
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    acts = load_file(args.data)["acts"].float()  # a store carried to a GPU machine may be fp16
    n_train = args.steps * args.batch
    held = acts[-args.eval_tokens:]
    distinct = acts[:acts.shape[0] - args.eval_tokens]
    # more steps than harvested training tokens: every library cycles through them in the same order
    train = distinct.repeat(-(-n_train // distinct.shape[0]), 1)[:n_train]
    base = _rss_mb()
    if args.lib in OURS and OURS[args.lib] != "adam" and args.arch != "topk":
        return {"lib": args.lib, "skipped": f"{OURS[args.lib]} is benchmarked on TopK only"}
    RELU_L1.update(dict(args.l1 or {}))
    fn = {"sparsescope": run_sparsescope, "sparsescope+signum": run_sparsescope, "sparsify": run_sparsify,
          "dictionary_learning": run_dictionary_learning, "sae_lens": run_sae_lens}[args.lib]
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    bf16 = bool(args.bf16 and cuda and args.lib in OURS)  # peers keep their fp32 path
    extra = {"lr": args.lr if args.lib == "sparsescope" else None, "optimizer": OURS[args.lib]} if args.lib in OURS else {}
    predict, seconds = fn(args.arch, args.d_sae, args.k, train, args.batch, args.steps, args.device, bf16, **extra)
    if predict is None:
        return {"lib": args.lib, "skipped": f"{args.lib} has no {args.arch} SAE"}
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb() - base
    x_hat, l0 = predict(held)
    return {"lib": args.lib, "tokens_per_s": n_train / seconds, "seconds": seconds,
            "peak_mb": peak, "fvu": fvu(held, x_hat.float().cpu()), "l0": l0}


# ---------------------------------------------------------------- orchestration

def _lib_value(text: str) -> tuple[str, float]:
    lib, _, value = text.partition("=")
    if lib not in RELU_L1 or not value:
        raise argparse.ArgumentTypeError(f"expected LIB=COEF with LIB in {sorted(RELU_L1)}, got {text!r}")
    return lib, float(value)


def run_one(lib: str, args, d_sae: int, arch: str) -> dict:
    py = sys.executable if lib in OURS else args.peers_python
    cmd = [py, __file__, "--worker", "--lib", lib, "--arch", arch, "--d-sae", str(d_sae), "--k", str(args.k),
           "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.threads),
           "--data", str(args.data), "--eval-tokens", str(args.eval_tokens), "--device", args.device]
    cmd += ["--lr", str(args.lr)] if args.lr else []
    cmd += ["--l1", *[f"{k}={v}" for k, v in args.l1]] if args.l1 else []
    cmd += ["--bf16"] if args.bf16 else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"lib": lib, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-sae", type=int, nargs="*", default=[4608, 18432])
    p.add_argument("--arch", nargs="*", default=["topk", "relu"])
    p.add_argument("--libs", nargs="*", default=list(LIBS))
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--train-tokens", type=int, default=131072,
                   help="distinct harvested training tokens (cycled when steps x batch is larger); 0 = no cycling")
    p.add_argument("--lr", type=float, default=None,
                   help="our Adam learning rate (default: core.training.module.default_lr; signum keeps its default)")
    p.add_argument("--l1", nargs="*", type=_lib_value, metavar="LIB=COEF",
                   help=f"ReLU L1 coefficients per library (default {RELU_L1})")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:N]; every library trains on it")
    p.add_argument("--bf16", action="store_true",
                   help="on CUDA, also train ours under bf16 autocast (weights, thresholds and norms stay fp32)")
    p.add_argument("--peers-python", default=str(PEERS_PY),
                   help="the interpreter that has the peers installed (default: bench/peers/.venv)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lib", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.arch, args.d_sae = args.arch[0], args.d_sae[0]
        print(json.dumps(worker(args)))
        return
    if set(args.libs) - set(OURS) and not Path(args.peers_python).exists() and not shutil.which(args.peers_python):
        sys.exit(f"peers' interpreter {args.peers_python} missing: run `bash bench/peers/setup.sh` first")
    sys.path.insert(0, str(ROOT))
    from core.cache import cache_dir

    n_harvest = min(args.steps * args.batch, args.train_tokens or args.steps * args.batch)
    args.data = prepare(cache_dir(), n_harvest + args.eval_tokens)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {machine(args.device)}, torch {torch.__version__}, "
          f"threads {args.threads}{', ours bf16 autocast' if args.bf16 else ''}"
          f" | SmolLM2-135M {HOOK}, {args.steps * args.batch:,} training tokens"
          f"{f' ({n_harvest:,} distinct, cycled)' if n_harvest < args.steps * args.batch else ''}"
          f", batch {args.batch}, k {args.k}, our Adam lr {args.lr or 'default'}")
    print(f"{'arch':5s} {'d_sae':>6s} {'library':20s} {'tokens/s':>9s} {'peak MB':>8s} {'FVU':>7s} "
          f"{'L0':>6s} {'ours/peer':>9s} {'signum/peer':>11s}")
    for arch in args.arch:
        for d_sae in args.d_sae:
            runs: dict[str, list[dict]] = {lib: [] for lib in args.libs}
            for _ in range(args.reps):
                for lib in args.libs:
                    runs[lib].append(run_one(lib, args, d_sae, arch))
            rows = {}
            for lib, rs in runs.items():
                good = [r for r in rs if "tokens_per_s" in r]
                if not good:
                    rows[lib] = rs[-1]
                    continue
                rows[lib] = {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in good),
                             "peak_mb": max(r["peak_mb"] for r in good), "fvu": good[-1]["fvu"],
                             "l0": good[-1].get("l0")}
            ours = rows.get("sparsescope", {}).get("tokens_per_s")
            signum = rows.get("sparsescope+signum", {}).get("tokens_per_s")
            for lib, r in rows.items():
                if "tokens_per_s" not in r:
                    print(f"{arch:5s} {d_sae:6d} {lib:20s} {r.get('skipped') or r.get('error')}")
                    continue
                ratio = f"{ours / r['tokens_per_s']:.2f}x" if ours and lib not in OURS else ""
                ratio_s = f"{signum / r['tokens_per_s']:.2f}x" if signum and lib not in OURS else ""
                l0 = f"{r['l0']:.1f}" if r.get("l0") is not None else "-"
                print(f"{arch:5s} {d_sae:6d} {lib:20s} {r['tokens_per_s']:9.0f} {r['peak_mb']:8.0f} "
                      f"{r['fvu']:7.3f} {l0:>6s} {ratio:>9s} {ratio_s:>11s}", flush=True)


if __name__ == "__main__":
    main()
