"""``trainer.precision: auto``: bf16 matmuls where the hardware multiplies bf16 natively, fp32 elsewhere.

On a CPU with bf16 matrix units (Intel AMX, or AVX-512 BF16) a bf16 product of the encoder's
shape runs ~3x faster than fp32 (~1,200 against ~330-390 GFLOP/s measured on a Xeon with AMX);
on a CPU without them oneDNN emulates bf16 and the same product runs ~100x *slower* than fp32
(0.4-1 GFLOP/s against 10-38 on the 2-core AMD EPYC with AVX2 only, bench/README.md). So the
choice must follow the hardware, and ``auto`` reads it from ``/proc/cpuinfo`` (flags
``amx_bf16``, ``avx512_bf16``) and from the CPU capability torch reports. Under ``bf16-mixed``
Lightning wraps each step in ``torch.autocast``; parameters, thresholds, decoder norms and the
optimiser state stay fp32 (tests/test_training.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from core.errors import ConfigError

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
ENV = "SPARSESCOPE_CPU_BF16"  # 0: treat the CPU as having no bf16 units (auto -> fp32); 1: as having them
ALIASES = {"32": "32-true", "fp32": "32-true", "32-true": "32-true", "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed"}
OTHER = {"16-mixed", "16-true", "bf16-true", "64-true", "64", "16", "transformer-engine"}  # Lightning's own, passed on


def cpu_bf16_units(cpuinfo: str | None = None) -> list[str]:
    """The bf16 matrix-unit flags this CPU reports (empty when it has none).

    ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when None; absent off Linux, where torch's
    reported capability is the only source: ``AVX512_BF16`` or ``AMX*``). When it is read, the
    environment variable ``SPARSESCOPE_CPU_BF16`` overrides it (0 or 1): for a virtual machine
    whose flags promise units that run slowly, and for the test suite, whose figures must not
    depend on the CI machine's CPU."""
    if cpuinfo is None:
        override = os.environ.get(ENV, "").strip().lower()
        if override in ("0", "no", "off", "false"):
            return []
        if override in ("1", "yes", "on", "true"):
            return [ENV.lower()]
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    found = [f for f in BF16_FLAGS if f in flags]
    if not found and not cpuinfo:
        capability = str(torch.backends.cpu.get_cpu_capability()).upper()
        if "AMX" in capability or "BF16" in capability:
            found = [capability.lower()]
    return found


def _device_kind(accelerator: str | None) -> str:
    acc = str(accelerator or "auto").lower()
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def resolve_precision(precision: str | int | None, accelerator: str | None = "auto",
                      *, cpuinfo: str | None = None) -> tuple[str, str]:
    """``(Lightning precision, why)`` for ``trainer.precision``.

    ``auto``: ``bf16-mixed`` on a CUDA device that supports bf16 and on a CPU with bf16 matrix
    units, ``32-true`` otherwise. Explicit values pass through (``32``/``bf16`` are accepted as
    short forms); Lightning's other precisions pass on unchanged; anything else is refused."""
    value = "auto" if precision is None else str(precision)
    if value not in ALIASES and value not in OTHER and value != "auto":
        raise ConfigError(f"unknown trainer.precision {precision!r}",
                          fix="use auto, 32-true or bf16-mixed (or another Lightning precision)")
    if value != "auto":
        return ALIASES.get(value, value), "set in trainer.precision"
    kind = _device_kind(accelerator)
    if kind == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16-mixed", "auto: the CUDA device supports bf16"
        return "32-true", "auto: no CUDA device with bf16"
    units = cpu_bf16_units(cpuinfo)
    if units:
        return "bf16-mixed", f"auto: the CPU has bf16 matrix units ({', '.join(units)})"
    capability = torch.backends.cpu.get_cpu_capability()
    return "32-true", f"auto: the CPU has no bf16 matrix units (capability {capability}; bf16 would be emulated, slower)"
