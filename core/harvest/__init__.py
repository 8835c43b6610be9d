"""Harvest: activations of a model at named hook points, written to activation stores.

``engine`` runs the forward passes and writes the stores (resumable), ``parallel`` does it on several
processes (Lightning's predict loop under DDP), ``passes`` holds what both share, ``order`` plans the
batches, ``positions`` picks the tokens kept, ``inputs`` turns the stage's config into
samples and hook names, ``pairs`` names an MLP's input and output harvested together (for
transcoders), ``aligned`` harvests several models on their shared positions (for
crosscoders). ``core.stages.harvest`` is the stage; case studies call :func:`harvest` directly.
"""

from core.harvest.aligned import Source, harvest_aligned
from core.harvest.engine import harvest
from core.harvest.order import pack_batches, processing_order, token_estimator
from core.harvest.pairs import PAIR_SITE, check_layers, mlp_pair_hooks
from core.harvest.passes import samples_fingerprint
from core.harvest.positions import PositionRule, keep_mask

__all__ = ["PAIR_SITE", "PositionRule", "Source", "harvest_aligned", "check_layers", "harvest", "keep_mask", "mlp_pair_hooks", "pack_batches",
           "processing_order", "samples_fingerprint", "token_estimator"]
