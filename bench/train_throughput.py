"""Training throughput (tokens/s) and peak memory of every architecture on this machine.

    python bench/train_throughput.py [--d-in 576 --d-sae 4608 --batch 4096 --steps 3 --threads N]
    python bench/train_throughput.py --compile     # also each step under torch.compile, side by side

Each configuration runs in its own subprocess, so the peak resident memory (``ru_maxrss``)
is that configuration's alone; the baseline is the process after building the data. One
step is the full optimiser step used in training: loss, backward, decoder-gradient
projection, Adam, decoder renormalisation. The dense matmul rate of the encoder's shape
(``batch x d_in @ d_in x d_sae``) is measured beside it; ``matmuls/step`` says how many such
matmuls of work one step costs at that rate (a dense SAE step needs about 3: encoder forward,
encoder weight gradient, decoder forward, plus the decoder backward, so ~4-5).

``--compile`` runs every architecture a second time with its loss under ``torch.compile`` (what
``trainer.compile=true`` does), in its own process right after the plain one, and prints the
compile time and the compiled/plain speed ratio. ``progress`` changes every step, as in
training, so a recompile per step would show (there is one, at the second step, when
``progress`` stops being 0.0; the compile time includes it). ``--device cuda`` runs the same on a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

CONFIGS = [
    ("relu", {"l1_coefficient": 1.0}),
    ("topk (dense)", {"architecture": "topk", "sparse_decode": False}),
    ("topk (sparse)", {"architecture": "topk", "sparse_decode": True}),
    ("batchtopk (sparse)", {"architecture": "batchtopk", "sparse_decode": True}),
    ("matryoshka (sparse)", {"architecture": "matryoshka", "sparse_decode": True}),
    ("jumprelu", {"l0_coefficient": 0.01}),
    ("gated", {"l1_coefficient": 1.0}),
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def matmul_gflops(batch: int, d_in: int, d_sae: int, device: str = "cpu", repeats: int = 3) -> float:
    a = torch.randn(batch, d_in, device=device)
    b = torch.randn(d_in, d_sae, device=device)
    repeats = repeats if device == "cpu" else 50 * repeats
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2.0 * batch * d_in * d_sae * repeats / (time.perf_counter() - t0) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def one(name: str, args) -> dict:
    from core.dictionaries import build_dictionary

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x = torch.randn(args.batch, args.d_in, device=device)
    spec = dict(dict(CONFIGS)[name])
    cfg = {"architecture": name.split()[0], "d_in": args.d_in, "d_sae": args.d_sae, "k": args.k, **spec}
    base = _rss_mb()
    sae = build_dictionary(cfg).to(device)
    sae.train()
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4)
    dead = torch.zeros(args.d_sae, dtype=torch.bool, device=device)
    dead[: args.d_sae // 20] = True  # 5% dead: AuxK runs, as it would mid-training
    loss = torch.compile(sae.loss) if args.compiled else sae.loss

    def step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss(x, dead_mask=dead, progress=i / (args.steps + 2)).loss.backward()
        if sae.unit_norm_decoder:
            sae.project_decoder_grad()
        opt.step()
        sae.post_step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step(0)
    step(1)  # dynamo specialises progress == 0.0, then recompiles once with it symbolic
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i + 2)
    seconds = (time.perf_counter() - t0) / args.steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else _rss_mb() - base
    return {"name": name, "tokens_per_s": args.batch / seconds, "step_s": seconds,
            "first_s": first, "peak_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--only", nargs="*", help="architectures to run (names as in the table)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time each architecture under torch.compile")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    torch.set_num_threads(args.threads)
    rate = matmul_gflops(args.batch, args.d_in, args.d_sae, args.device)
    matmul_s = 2.0 * args.batch * args.d_in * args.d_sae / (rate * 1e9)
    where = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"threads={args.threads}"
    print(f"d_in={args.d_in} d_sae={args.d_sae} batch={args.batch} k={args.k} {where}")
    print(f"dense matmul [{args.batch}x{args.d_in}] @ [{args.d_in}x{args.d_sae}]: {rate:.1f} GFLOP/s "
          f"({matmul_s * 1000:.2f} ms)")
    extra = f" {'compiled tok/s':>15s} {'compile s':>10s} {'compiled/plain':>15s}" if args.compile else ""
    print(f"{'architecture':22s} {'tokens/s':>10s} {'step ms':>9s} {'matmuls/step':>13s} {'peak MB':>9s}{extra}")
    names = [n for n, _ in CONFIGS if not args.only or n in args.only or n.split()[0] in args.only]
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--d-in", str(args.d_in), "--d-sae", str(args.d_sae),
               "--batch", str(args.batch), "--k", str(args.k), "--steps", str(args.steps),
               "--threads", str(args.threads), "--device", args.device]
        r = _run(cmd)
        line = (f"{name:22s} {r['tokens_per_s']:10.0f} {r['step_s'] * 1000:9.1f} "
                f"{r['step_s'] / matmul_s:13.2f} {r['peak_mb']:9.0f}")
        if args.compile:
            c = _run([*cmd, "--compiled"])
            line += f" {c['tokens_per_s']:15.0f} {c['first_s']:10.1f} {c['tokens_per_s'] / r['tokens_per_s']:14.2f}x"
        print(line, flush=True)


def _run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
