"""PyTorch forward hooks on the real modules of a model, behind the adapter's named hook points.

Each hook name maps to one module and to whether the activation is that module's input
(a forward pre-hook) or its output (a forward hook). Intervening replaces the tensor the
model passes on, so capture, splice and steer see exactly what the next module sees.
Models that keep activations time-first (fair-esm's [T, B, d]) are transposed to [B, T, d]
on the way in and back on the way out, so interventions see one layout everywhere.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core.adapters.base import Batch, Intervention, ModelAdapter, StopForward


@dataclass
class HookSpec:
    module: nn.Module
    kind: str = "output"  # "output": what the module returns; "input": its first argument
    time_first: bool = False


def _apply(fn: Intervention, act: torch.Tensor, batch: Batch, time_first: bool) -> torch.Tensor:
    view = act.transpose(0, 1) if time_first else act
    out = fn(view, batch)
    if out is None:
        raise TypeError("an intervention must return the activation (return it unchanged to only read it)")
    if out.shape != view.shape:
        raise ValueError(f"intervention changed the activation shape {tuple(view.shape)} -> {tuple(out.shape)}")
    out = out.to(act.dtype)
    return out.transpose(0, 1) if time_first else out


class TorchHookAdapter(ModelAdapter):
    """Implements intervene/forward for any adapter that can name its modules."""

    model: nn.Module
    device: torch.device
    _specs: dict[str, HookSpec] | None = None
    _batch: Batch | None = None

    @abstractmethod
    def _build_hook_specs(self) -> dict[str, HookSpec]:
        """Hook name -> module, shallow to deep."""

    @abstractmethod
    def _run(self, batch: Batch) -> torch.Tensor:
        """The model's own forward on a batch already on the device; returns logits."""

    @property
    def specs(self) -> dict[str, HookSpec]:
        if self._specs is None:
            self._specs = self._build_hook_specs()
        return self._specs

    @property
    def hook_points(self) -> list[str]:
        return list(self.specs)

    def module_of(self, hook: str) -> nn.Module:
        return self.specs[self.check_hooks([hook])[0]].module

    @contextmanager
    def intervene(self, hook: str, fn: Intervention) -> Iterator[None]:
        spec = self.specs[self.check_hooks([hook])[0]]
        handle = self._register(spec, lambda act: _apply(fn, act, self._current_batch(), spec.time_first))
        try:
            yield
        finally:
            handle.remove()

    def _current_batch(self) -> Batch:
        if self._batch is None:
            raise RuntimeError("an intervention ran outside adapter.forward; call the model through the adapter")
        return self._batch

    @staticmethod
    def _register(spec: HookSpec, transform) -> Any:
        if spec.kind == "output":
            def out_hook(_module, _args, output):
                if isinstance(output, tuple):
                    return (transform(output[0]),) + tuple(output[1:])
                return transform(output)

            return spec.module.register_forward_hook(out_hook)

        def in_hook(_module, args, kwargs):
            if args:
                return (transform(args[0]),) + tuple(args[1:]), kwargs
            key = next(iter(kwargs))
            kwargs = dict(kwargs)
            kwargs[key] = transform(kwargs[key])
            return args, kwargs

        return spec.module.register_forward_pre_hook(in_hook, with_kwargs=True)

    def forward(self, batch: Batch, *, stop_at: str | None = None) -> torch.Tensor | None:
        batch = batch.to(self.device)
        handle = None
        if stop_at is not None:
            spec = self.specs[self.check_hooks([stop_at])[0]]

            def stop(_act):
                raise StopForward(stop_at)

            handle = self._register(spec, stop)
        previous, self._batch = self._batch, batch
        try:
            with torch.no_grad():
                return self._run(batch)
        except StopForward:
            return None
        finally:
            self._batch = previous
            if handle is not None:
                handle.remove()
