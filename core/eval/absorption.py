"""The ``absorption`` evaluation: the first-letter task of Chanin et al. (2024, "A is for
Absorption"), as SAEBench runs it.

Tokens that start a word with a letter (" cat" -> c) are taken from the store with their
activations. Per letter: a ground-truth linear probe on the model's activations (one
multinomial logistic regression over the letters, trained on one set of token ids and
tested on the others, so no word is in both), and the letter's main latents from k-sparse
probing on the SAE latents (grow k from 1 while the probe's F1 gains more than
``tau_fs`` = 0.03, SAEBench's feature-splitting threshold). On each test token the probe
classifies correctly, every active latent contributes ``a_i * (d_i . p)`` to the projection
of the reconstruction on the probe direction ``p``; the absorption fraction is the share of
the positive contributions that does not come from the letter's main latents, and a token
is fully absorbed when no main latent fires at all.

Differences from SAEBench: tokens in their natural contexts from the store rather than an
in-context-learning prompt template. SAEBench's caveat holds here even more: the metric is
meant for larger models and SAEs than this project trains on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from core.errors import DataError
from core.eval.base import Eval, EvalContext, EvalResult

CAVEAT = ("SAEBench: absorption is meant for larger models and SAEs; on small ones the probe and the "
          "main latents are noisy")


@dataclass
class AbsorptionConfig:
    letters: str = "abcdefghijklmnopqrstuvwxyz"
    min_per_letter: int = 20
    min_word_length: int = 2
    test_fraction: float = 0.3
    tau_fs: float = 0.03
    k_max: int = 5
    max_tokens: int = 100_000
    chunk_tokens: int = 32768
    seed: int = 0


@dataclass
class AbsorptionResult(EvalResult):
    mean_absorption_fraction: float | None
    full_absorption_rate: float | None
    probe_accuracy: float
    n_letters: int
    n_tokens: int
    letters: list[dict[str, Any]]
    caveat: str = CAVEAT

    def headline(self) -> dict[str, float | None]:
        return {"mean_absorption_fraction": self.mean_absorption_fraction,
                "full_absorption_rate": self.full_absorption_rate, "probe_accuracy": self.probe_accuracy}


def first_letters(vocab: list[str], letters: str, min_len: int) -> np.ndarray:
    """Per token id: the index in ``letters`` of the first letter of a word-initial token, else -1."""
    out = np.full(len(vocab), -1, dtype=np.int64)
    for i, tok in enumerate(vocab):
        if tok.startswith(" ") and tok[1:].isalpha() and tok[1:].isascii() and len(tok) - 1 >= min_len:
            j = letters.find(tok[1].lower())
            out[i] = j
    return out


def main_latents(F: sp.csr_matrix, y: np.ndarray, k_max: int, tau: float) -> list[int]:
    """Latents of a letter by k-sparse probing: grow k while F1 gains more than ``tau``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    diff = np.asarray(F[y].mean(0)).ravel() - np.asarray(F[~y].mean(0)).ravel()
    order = [int(i) for i in np.argsort(-diff, kind="stable")[:k_max] if diff[i] > 0]
    chosen, best = [], 0.0
    for i in order:
        cols = chosen + [i]
        Z = F[:, cols].toarray()
        pred = LogisticRegression(max_iter=1000, class_weight="balanced").fit(Z, y).predict(Z)
        f1 = float(f1_score(y, pred))
        if chosen and f1 - best <= tau:
            break
        chosen, best = cols, f1
    return chosen


def absorption_scores(X: np.ndarray, F: sp.csr_matrix, W_dec: np.ndarray, token: np.ndarray, letter: np.ndarray,
                      c: AbsorptionConfig) -> AbsorptionResult:
    """The metric from activations ``X``, latents ``F``, decoder rows and each token's letter."""
    from sklearn.linear_model import LogisticRegression

    from core.store import holdout_mask

    test = holdout_mask(token, c.test_fraction, c.seed + 211).numpy()
    counts = np.bincount(letter[~test], minlength=len(c.letters))
    counts_test = np.bincount(letter[test], minlength=len(c.letters))
    use = np.flatnonzero((counts >= c.min_per_letter) & (counts_test >= 1))
    if len(use) < 2:
        raise DataError(f"only {len(use)} letters have {c.min_per_letter} word-initial training tokens",
                        fix="harvest more text, or lower evaluate.absorption.min_per_letter")
    keep = np.isin(letter, use)
    X, F, token, letter, test = X[keep], F[keep], token[keep], letter[keep], test[keep]
    scale = float(np.sqrt((X[~test] ** 2).sum(1).mean())) or 1.0
    probe = LogisticRegression(max_iter=2000, C=1.0).fit(X[~test] / scale, letter[~test])
    pred = probe.predict(X[test] / scale)
    coef = probe.coef_ if len(probe.classes_) > 2 else np.vstack([-probe.coef_[0], probe.coef_[0]])
    directions = coef / np.linalg.norm(coef, axis=1, keepdims=True)
    proj = W_dec @ directions.T  # [d_sae, n_letters]: each latent's decoder on each probe
    F_test = F[test].tocsr()
    rows, fracs, fulls = [], [], []
    for li, L in enumerate(probe.classes_):
        main = main_latents(F[~test], letter[~test] == L, c.k_max, c.tau_fs)
        idx = np.flatnonzero((letter[test] == L) & (pred == L))
        a_frac, a_full, absorbers = [], 0, np.zeros(F.shape[1])
        for t in idx:
            lo, hi = F_test.indptr[t], F_test.indptr[t + 1]
            lat, act = F_test.indices[lo:hi], F_test.data[lo:hi]
            contrib = act * proj[lat, li]
            pos = contrib > 0
            total = contrib[pos].sum()
            in_main = np.isin(lat, main)
            if not in_main.any():
                a_full += 1
            if total <= 0:
                continue
            a_frac.append(1.0 - min(1.0, max(0.0, contrib[pos & in_main].sum() / total)))
            np.add.at(absorbers, lat[pos & ~in_main], contrib[pos & ~in_main])
        frac = float(np.mean(a_frac)) if a_frac else None
        full = a_full / len(idx) if len(idx) else None
        if frac is not None:
            fracs.append(frac)
        if full is not None:
            fulls.append(full)
        rows.append({"letter": c.letters[L], "main_latents": main, "n_test_correct": int(len(idx)),
                     "absorption_fraction": frac, "full_absorption_rate": full,
                     "top_absorber": int(absorbers.argmax()) if absorbers.any() else None})
    acc = float((pred == letter[test]).mean()) if test.any() else float("nan")
    return AbsorptionResult(float(np.mean(fracs)) if fracs else None, float(np.mean(fulls)) if fulls else None,
                            acc, len(use), int(len(letter)), rows)


class AbsorptionEval(Eval):
    name = "absorption"
    Config = AbsorptionConfig

    def run(self, ctx: EvalContext) -> AbsorptionResult:
        from core.enrich.features import DictionaryFeatures, iter_sample_chunks
        from core.explain.text import TokenText

        c = self.config
        text = ctx.shared.get("token_text")
        if text is None or text.vocab is None:
            text = TokenText(ctx.store.meta.get("vocab")) if ctx.store.meta.get("vocab") else text
        if text is None or text.vocab is None:
            raise DataError("the absorption evaluation needs the token strings of the store's tokenizer",
                            path=str(ctx.store.root), fix="add model=<the model the store was harvested from>")
        table = first_letters(text.vocab, c.letters, c.min_word_length)
        src = DictionaryFeatures(ctx.sae, ctx.store, chunk_tokens=c.chunk_tokens)
        xs, fs, toks = [], [], []
        n_kept = 0
        for ch in iter_sample_chunks(ctx.store.iter_shards(), c.chunk_tokens, str(ctx.store.root)):
            tok = np.asarray(ch["token"], np.int64)
            ok = (tok >= 0) & (tok < len(table))
            ok[ok] = table[tok[ok]] >= 0
            if n_kept + ok.sum() > c.max_tokens:
                ok[np.flatnonzero(ok)[c.max_tokens - n_kept:]] = False
            if ok.any():
                xs.append(np.asarray(ch["acts"][ok], np.float32))
                fs.append(src.encode(ch["acts"][ok]))
                toks.append(tok[ok])
                n_kept += int(ok.sum())
            if n_kept >= c.max_tokens:
                break
        if not toks:
            raise DataError("the store holds no word-initial alphabetic tokens", path=str(ctx.store.root),
                            fix="the first-letter task needs a text model's store (e.g. SmolLM2 on text)")
        token = np.concatenate(toks)
        W = ctx.sae.W_dec.detach().float().cpu().numpy()
        return absorption_scores(np.concatenate(xs), sp.vstack(fs, format="csr"), W, token, table[token], c)
