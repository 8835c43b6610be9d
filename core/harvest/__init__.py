"""Harvest: activations of a model at named hook points, written to activation stores.

``engine`` runs the forward passes and writes the stores (resumable), ``order`` plans the
batches, ``positions`` picks the tokens kept, ``inputs`` turns the stage's config into
samples and hook names. ``core.stages.harvest`` is the stage; case studies call
:func:`harvest` directly.
"""

from core.harvest.engine import harvest, samples_fingerprint
from core.harvest.order import pack_batches, processing_order, token_estimator
from core.harvest.positions import PositionRule, keep_mask

__all__ = ["PositionRule", "harvest", "keep_mask", "pack_batches", "processing_order", "samples_fingerprint",
           "token_estimator"]
