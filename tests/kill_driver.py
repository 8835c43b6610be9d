"""Run the ``sparsescope`` CLI and SIGKILL it at a chosen point (test helper).

    SPARSESCOPE_KILL=<point>:<n> python -m tests.kill_driver <hydra overrides>

Points (the process kills itself with SIGKILL, the signal nothing can catch or clean up after):
- ``harvest:n``: inside the n-th shard commit, after the shard file is written and before the
  manifest lists it (the worst moment for a store);
- ``train:n``: at global step n of the first training run that reaches it, on every rank;
- ``enrich:n``: in the n-th enrichment run, once its tables are written and before its AnnData;
- ``report:n``: when the n-th report named report.html in the run directory itself is written.
Without SPARSESCOPE_KILL this is the plain CLI. Lightning's DDP launcher re-runs this same
module in its child processes, which inherit the variable; SPARSESCOPE_KILL_RANK=r limits the
kill to local rank r (the other ranks then see a worker die).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counter(n: int):
    calls = {"n": 0}

    def tick() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    return tick


def _install(point: str, n: int) -> None:
    if point == "harvest":
        import core.store.writer as writer

        real, tick = writer.sha256_file, _counter(n)

        def sha256_then_maybe_die(path):
            if tick():
                _die()
            return real(path)

        writer.sha256_file = sha256_then_maybe_die
    elif point == "train":
        from lightning.pytorch.callbacks import Callback

        import core.training.train as train

        class _KillAtStep(Callback):
            def on_train_batch_end(self, trainer, *args) -> None:
                if trainer.global_step == n:
                    _die()

        real_build = train.build_trainer

        def build_with_kill(cfg, out_dir, max_steps, callbacks):
            return real_build(cfg, out_dir, max_steps, [*callbacks, _KillAtStep()])

        train.build_trainer = build_with_kill
    elif point == "enrich":
        import core.enrich.anndata_export as export

        real_write, tick = export.write_h5ad, _counter(n)

        def write_or_die(adata, path):
            if tick():
                _die()
            return real_write(adata, path)

        export.write_h5ad = write_or_die
    elif point == "report":
        from core.report.html import Report

        real_report, tick = Report.write, _counter(n)
        run_dir = Path(os.environ["SPARSESCOPE_KILL_RUN_DIR"]).resolve()

        def report_or_die(self, name="report.html"):
            if name == "report.html" and Path(self.out_dir).resolve() == run_dir and tick():
                _die()
            return real_report(self, name)

        Report.write = report_or_die
    else:
        raise SystemExit(f"unknown kill point {point!r}")


def main() -> None:
    spec = os.environ.get("SPARSESCOPE_KILL")
    only = os.environ.get("SPARSESCOPE_KILL_RANK")
    if spec and (only is None or int(only) == int(os.environ.get("LOCAL_RANK", 0))):
        point, _, n = spec.partition(":")
        _install(point, int(n or 1))
    from core.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
