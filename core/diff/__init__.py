"""Model diffing with crosscoders: which latents two sources share and which one alone has.

``norms`` reads each latent's per-source decoder norms (relative decoder norm, its histogram,
the shared / a-only / b-only classes with stated cut-offs); ``scaling`` is Latent Scaling
(Minder et al. 2025), which tests whether an "exclusive" latent is really exclusive;
``depth`` profiles a multi-layer crosscoder's latents over its layers; ``concepts`` reads
the enrichment engine's tables per class; ``report`` draws the figures.
``core.stages.diff`` is the stage.
"""

from core.diff.norms import CLASSES, Cutoffs, class_counts, classify, relative_norm, source_norms
from core.diff.scaling import latent_scaling, reclassify

__all__ = ["CLASSES", "Cutoffs", "class_counts", "classify", "latent_scaling", "reclassify", "relative_norm",
           "source_norms"]
