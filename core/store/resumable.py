"""A DataLoader whose position in the stream is saved in Lightning's checkpoints.

Lightning saves ``state_dict()`` of every train loader that has one and hands it back through
``load_state_dict`` before it iterates again after a resume. Without this a run killed in the
middle of a pass restarts that pass from its first batch, so a resumed SAE differs from an
uninterrupted one. With it, the stream replays the interrupted pass (same shard order, same
shuffle-buffer draws: both are seeded by the pass index) and drops the batches already trained
on, so resumed and uninterrupted runs see the same batches in the same order.

The position is read from the trainer's own progress counters, not counted here: Lightning
fetches one batch ahead, so the batches handed out are one more than the batches trained on.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch.utils.data import DataLoader


class Replayable(Protocol):
    def resume_at(self, epoch: int, batches: int) -> None: ...


def trained_position(trainer: Any) -> tuple[int, int]:
    """(pass index, batches of that pass already trained on) at a checkpoint in ``on_train_batch_end``."""
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return int(trainer.current_epoch), int(progress.processed)


class ResumableLoader(DataLoader):
    """``DataLoader(dataset, batch_size=None, ...)`` over a dataset with ``resume_at(epoch, batches)``.

    ``owner`` is the LightningDataModule (or module) whose ``trainer`` is attached during fit."""

    def __init__(self, dataset: Replayable, *, owner: Any, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self._owner = owner

    def state_dict(self) -> dict[str, int]:
        trainer = getattr(self._owner, "_trainer", None) or getattr(self._owner, "trainer", None)
        if trainer is None:
            return {}
        epoch, batches = trained_position(trainer)
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state:
            self.dataset.resume_at(int(state["epoch"]), int(state["batches"]))
