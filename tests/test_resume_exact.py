"""A training run interrupted between checkpoints and resumed is the run that was never
interrupted: the data stream replays the interrupted pass and skips the batches already trained
on (core/store/resumable.py), so weights match bit for bit."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from core.store import ActivationDataModule
from core.training import train_sae
from tests.planted_store import write_planted_store

SAE = {"architecture": "topk", "d_in": 16, "d_sae": 32, "k": 3, "aux_k": 8, "dead_after_tokens": 2048}
TRAINER = {"accelerator": "cpu", "logger": "none", "enable_progress_bar": False, "checkpoint_every_n_steps": 5}


class _Crash(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.at_step:
            raise RuntimeError("simulated crash")


def _train(store, out, callbacks=()):
    dm = ActivationDataModule(store, batch_size=128, buffer_tokens=512, holdout_fraction=0.1)
    # 4096 train-ish tokens a pass at batch 128: 30 steps cross a pass boundary
    return train_sae(SAE, dm, out, trainer_cfg=TRAINER, total_tokens=30 * 128, lr=3e-3,
                     init_tokens=1024, callbacks=list(callbacks))


@pytest.mark.parametrize("crash_at", [12, 27])  # inside the first pass; inside the second
def test_resumed_run_equals_uninterrupted_bit_for_bit(tmp_path, crash_at):
    store = write_planted_store(tmp_path / "store", n_samples=128, shard_tokens=700)
    whole, s_whole = _train(store, tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(store, tmp_path / "cut", [_Crash(crash_at)])
    assert (tmp_path / "cut" / "checkpoints" / "last.ckpt").exists()
    resumed, s_resumed = _train(store, tmp_path / "cut")
    assert s_resumed["resumed_from"] is not None and s_resumed["steps"] == s_whole["steps"] == 30
    assert s_resumed["tokens"] == s_whole["tokens"]
    for name, p in whole.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name
