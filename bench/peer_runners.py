"""Each library's own training loop for ``bench/peer_benchmark.py``, timed the same way.

Every runner is called with the training tokens already in memory and nothing of the library
initialised; the caller reads the clock just before the call. A runner returns
``(predict, step_ends)``: a function mapping held-out tokens to (reconstruction, L0) and the
clock after each step (after a device synchronise on a GPU), so the whole run (call to last
step: imports, initialisation, every step) and the steady-state step time both come from one
run. ``bf16``: every library's forward and backward under ``torch.autocast(<device>, bf16)``:
ours through Lightning's ``bf16-mixed`` (its own switch), the peers by the benchmark wrapping
the step it drives, since none of them has a CPU switch (sparsify's ``forward`` carries its
own CUDA-only bf16 autocast, on whenever the GPU supports bf16, even in "fp32" GPU runs).
"""

from __future__ import annotations

import sys
import tempfile
import time
from contextlib import nullcontext

import torch

# Each library's L1 coefficient, in its own units, for about the same L0 (~230 active latents) at
# d_sae 4608 after 32 steps of 4096 tokens: ours 0.05/0.08/0.12/0.2 gave L0 794/227/4.6/0.6,
# dictionary_learning 5/20/60 gave 1978/500/81, SAELens 5/20/60 gave 3822/1608/135 (bench/README.md).
RELU_L1 = {"sparsescope": 0.08, "dictionary_learning": 32.0, "sae_lens": 48.0}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str, bf16: bool):
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if bf16 else nullcontext()


def _mark(marks: list[float], device: str) -> None:
    _sync(device)
    marks.append(time.perf_counter())


def _step_clock(device: str):
    """A callback holding the clock after each of our optimiser steps (Lightning calls
    ``on_train_batch_end`` after the step)."""
    from lightning.pytorch.callbacks import Callback

    class StepClock(Callback):
        marks: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            _mark(self.marks, device)
    clock = StepClock()
    clock.marks = []
    return clock


def preload(lib: str) -> None:
    """Import a library before the clock starts (imports are not part of anyone's run)."""
    if lib.startswith("sparsescope"):
        import core.training  # noqa: F401
    elif lib == "sparsify":
        import schedulefree  # noqa: F401
        import sparsify  # noqa: F401
    elif lib == "dictionary_learning":
        _import_dictionary_learning()
    elif lib == "sae_lens":
        import sae_lens.saes.standard_sae  # noqa: F401
        import sae_lens.saes.topk_sae  # noqa: F401


def run_sparsescope(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False, lr=None, optimizer="adam"):
    from core.training import TensorDataModule, train_sae

    cfg = {"architecture": arch, "d_in": train.shape[1], "d_sae": d_sae}
    cfg.update({"k": k} if arch == "topk" else {"l1_coefficient": RELU_L1["sparsescope"]})
    clock = _step_clock(device)
    with tempfile.TemporaryDirectory() as tmp:
        data = TensorDataModule(train[:steps * batch], batch_size=batch, shuffle=False)  # batches are views
        sae, _ = train_sae(cfg, data, tmp, total_tokens=steps * batch, batch_size=batch, lr=lr,
                           optimizer=optimizer, init_tokens=batch, save=False, warmup_steps=0,
                           callbacks=[clock],
                           trainer_cfg={"logger": "none", "enable_progress_bar": False,
                                        "accelerator": "gpu" if device.startswith("cuda") else "cpu",
                                        "devices": 1, "limit_val_batches": 0,
                                        "precision": "bf16-mixed" if bf16 else "32-true",
                                        "checkpoint_every_n_steps": 10**9})

    def predict(x):
        with torch.no_grad():
            f = sae.eval().encode(x)
            return sae.decode(f), float((f > 0).float().sum(1).mean())
    return predict, clock.marks


def run_sparsify(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False, lr=None):
    from schedulefree import ScheduleFreeWrapper
    from sparsify import SparseCoder, SparseCoderConfig
    from sparsify.sign_sgd import SignSGD

    if arch != "topk":
        return None, None
    sae = SparseCoder(train.shape[1], SparseCoderConfig(num_latents=d_sae, k=k), device=device)
    opt = ScheduleFreeWrapper(SignSGD(sae.parameters(), lr=lr or 5e-3 / (d_sae / 2**14) ** 0.5), momentum=0.95)
    opt.train()
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    marks: list[float] = []
    for i in range(steps):
        x = train[i * batch:(i + 1) * batch].to(device)
        if i == 0:
            sae.b_dec.data = x.mean(0)
            sae.set_decoder_norm_to_unit_norm()
        with _autocast(device, bf16):
            out = sae(x, dead_mask=since_fired > 10_000_000)
            loss = out.fvu + out.auxk_loss / 32
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        since_fired += x.shape[0]
        since_fired[out.latent_indices.flatten().unique()] = 0
        _mark(marks, device)
    opt.eval()

    def predict(x):
        with torch.no_grad():
            return sae(x.to(device)).sae_out.float().cpu(), float(k)
    return predict, marks


def _import_dictionary_learning():
    """Load its trainers without the package ``__init__``, which imports nnsight for buffers."""
    import importlib.util
    import types

    if "dictionary_learning.trainers.top_k" in sys.modules:
        mods = sys.modules
        return mods["dictionary_learning.trainers.top_k"].TopKTrainer, mods["dictionary_learning.trainers.standard"].StandardTrainer
    spec = importlib.util.find_spec("dictionary_learning")
    pkg = types.ModuleType("dictionary_learning")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["dictionary_learning"] = pkg
    from dictionary_learning.trainers.standard import StandardTrainer
    from dictionary_learning.trainers.top_k import TopKTrainer
    return TopKTrainer, StandardTrainer


def run_dictionary_learning(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False, lr=None):
    TopKTrainer, StandardTrainer = _import_dictionary_learning()
    common = dict(steps=steps, activation_dim=train.shape[1], dict_size=d_sae, layer=15, lm_name="smollm2",
                  device=device, seed=0, warmup_steps=0)
    if arch == "topk":
        trainer = TopKTrainer(k=k, threshold_start_step=0, lr=lr, **common)
    else:
        trainer = StandardTrainer(l1_penalty=RELU_L1["dictionary_learning"], sparsity_warmup_steps=None,
                                  lr=lr or 1e-4, **common)
    marks: list[float] = []
    for i in range(steps):
        x = train[i * batch:(i + 1) * batch].to(device)
        with _autocast(device, bf16):  # update() runs forward, backward and the optimiser step
            trainer.update(i, x)
        _mark(marks, device)

    def predict(x):
        with torch.no_grad():
            f = trainer.ae.encode(x.to(device))
            return trainer.ae.decode(f).cpu(), float((f > 0).float().sum(1).mean())
    return predict, marks


def run_sae_lens(arch, d_sae, k, train, batch, steps, device="cpu", bf16=False, lr=None):
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.standard_sae import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    common = dict(d_in=train.shape[1], d_sae=d_sae, dtype="float32", device=device)
    if arch == "topk":
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(k=k, **common))
    else:
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(l1_coefficient=RELU_L1["sae_lens"], **common))
    opt = torch.optim.Adam(sae.parameters(), lr=lr or (2e-4 / (d_sae / 2**14) ** 0.5 if arch == "topk" else 1e-4))
    coeffs = {name: c.value if hasattr(c, "value") else c for name, c in sae.get_coefficients().items()}
    since_fired = torch.zeros(d_sae, device=device)
    marks: list[float] = []
    for i in range(steps):
        x = train[i * batch:(i + 1) * batch].to(device)
        sae.train()
        with _autocast(device, bf16):  # what its trainer's `autocast` option wraps
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
        _mark(marks, device)

    def predict(x):
        sae.eval()
        with torch.no_grad():
            f = sae.encode(x.to(device))
            return sae.decode(f).cpu(), float((f > 0).float().sum(1).mean())
    return predict, marks


RUNNERS = {"sparsescope": run_sparsescope, "sparsescope+signum": run_sparsescope, "sparsify": run_sparsify,
           "dictionary_learning": run_dictionary_learning, "sae_lens": run_sae_lens}
