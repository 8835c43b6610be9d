"""Suite-wide settings: ``trainer.precision: auto`` resolves to fp32 in every test (and in the
CLI subprocesses the tests start), so that planted-truth thresholds and exact-resume checks do
not depend on whether the CI machine's CPU has bf16 matrix units; tests/test_precision.py
exercises the bf16 path explicitly."""

import os

os.environ.setdefault("SPARSESCOPE_CPU_BF16", "0")
