"""Matryoshka BatchTopK SAE (Bussmann et al. 2025; Nabeshima 2024).

Latents are ordered into nested prefixes (e.g. the first 1/16, 1/8, ... of the dictionary);
each prefix must reconstruct the input on its own, and the loss is the sum over prefixes.
Early latents are pushed towards general features, later ones towards refinements, which
counters feature absorption. Selection and the inference threshold are BatchTopK's.
"""

from __future__ import annotations

from core.dictionaries.base import DictionaryConfig, register
from core.dictionaries.batchtopk import BatchTopKSAE
from core.dictionaries.sparse import ActiveSet, sparse_decode
from core.errors import ConfigError


def default_prefixes(d_sae: int, n: int = 5) -> list[int]:
    """Halving prefixes ending at ``d_sae``: d/16, d/8, d/4, d/2, d for ``n = 5``."""
    sizes = sorted({max(1, d_sae >> i) for i in range(n)})
    return sizes


@register("matryoshka")
class MatryoshkaSAE(BatchTopKSAE):
    def __init__(self, cfg: DictionaryConfig) -> None:
        super().__init__(cfg)
        prefixes = sorted(cfg.matryoshka_prefixes or default_prefixes(cfg.d_sae))
        if prefixes[-1] != cfg.d_sae or prefixes[0] <= 0 or len(set(prefixes)) != len(prefixes):
            raise ConfigError(f"sae.matryoshka_prefixes {prefixes} must be distinct positive sizes "
                              f"ending at d_sae={cfg.d_sae}",
                              fix=f"e.g. sae.matryoshka_prefixes={default_prefixes(cfg.d_sae)}")
        self.prefixes = prefixes

    def reconstruct_terms(self, y, vals, active: ActiveSet, f, skip):
        x_hat = self.b_dec + skip
        total = y.new_zeros(())
        terms = {}
        lo = 0
        for hi in self.prefixes:
            if f is None:
                part = (active.cols >= lo) & (active.cols < hi)
                x_hat = x_hat + sparse_decode(vals[part], self.W_dec, active.subset(part))
            else:
                x_hat = x_hat + f[:, lo:hi] @ self.W_dec[lo:hi]
            mse = self.reconstruction_loss(x_hat, y)
            terms[f"mse_{hi}"] = mse
            total = total + mse
            lo = hi
        terms["mse"] = terms[f"mse_{self.prefixes[-1]}"]
        terms["recon"] = total
        return x_hat, terms
