"""Model adapters: one interface to capture, splice and steer activations of any model.

``load_adapter(cfg.model)`` instantiates the adapter a ``conf/model/*.yaml`` names through
its ``_target_``; model modules are imported only when their config is used.
"""

from __future__ import annotations

from typing import Any

from core.adapters.base import Batch, Intervention, ModelAdapter, StopForward, describe_hooks

__all__ = ["Batch", "Intervention", "ModelAdapter", "StopForward", "describe_hooks", "load_adapter"]


def load_adapter(cfg: Any) -> ModelAdapter:
    """Build the adapter described by a model config (a DictConfig, dict, or path to a yaml)."""
    from pathlib import Path

    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    from core.errors import ConfigError

    if isinstance(cfg, (str, Path)):
        cfg = OmegaConf.load(cfg)
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    if "_target_" not in cfg:
        raise ConfigError("the model config has no _target_", fix="use one of the configs in conf/model/")
    from hydra.errors import InstantiationException

    from core.errors import UserError

    try:
        return instantiate(cfg, _convert_="all")
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
