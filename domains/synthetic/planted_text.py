"""A toy text corpus whose features are planted: each feature fires exactly on the words of one
class (animals, colours, ...), so the true explanation of every feature is known.

Sentences are filler words with class words sprinkled in; every word is one token of the
tokenizer given (words that split are dropped, so "fires on the word" means "fires on its
token"). Used to calibrate explanation scorers: the true explanation must score above a
shuffled one, and the shuffled one at chance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

CLASSES: dict[str, tuple[str, str]] = {
    "animals": ("names of animals, such as dog or horse",
                "dog cat horse cow sheep lion tiger bear wolf fox rabbit mouse goat pig duck eagle"),
    "colours": ("colour words, such as red or blue", "red blue green yellow black white brown purple orange pink grey"),
    "numbers": ("number words, such as three or ten", "one two three four five six seven eight nine ten twenty hundred"),
    "countries": ("names of countries, such as France or Japan",
                  "France Germany Spain Italy China Japan India Brazil Canada Mexico Russia Egypt"),
    "fruits": ("names of fruits, such as apple or banana", "apple banana grape lemon mango peach pear cherry plum"),
    "body": ("parts of the body, such as hand or nose", "hand foot head arm leg eye nose mouth ear knee finger heart"),
    "weekdays": ("days of the week, such as Monday", "Monday Tuesday Wednesday Thursday Friday Saturday Sunday"),
    "metals": ("names of metals, such as iron or gold", "iron gold silver copper steel tin lead zinc"),
}
FILLER = "the a of and to in we went saw with near on was it there that this very some many".split()


@dataclass
class PlantedCorpus:
    texts: list[str]
    sample: np.ndarray
    position: np.ndarray
    token: np.ndarray
    word_class: np.ndarray  # per token: index into ``classes``, -1 for filler
    classes: list[str]
    truths: list[str]

    def activations(self, seed: int = 0) -> sp.csr_matrix:
        """Feature f = class f: uniform(0.5, 2) on its tokens, 0 elsewhere."""
        rng = np.random.default_rng(seed)
        rows = np.flatnonzero(self.word_class >= 0)
        return sp.csr_matrix((rng.uniform(0.5, 2.0, len(rows)).astype(np.float32), (rows, self.word_class[rows])),
                             shape=(len(self.token), len(self.classes)))

    def concept_matrix(self):
        from core.enrich.concepts import ConceptMatrix

        rows = np.flatnonzero(self.word_class >= 0)
        values = sp.csr_matrix((np.ones(len(rows), np.int32), (rows, self.word_class[rows])),
                               shape=(len(self.token), len(self.classes)))
        return ConceptMatrix(values, pd.DataFrame({"name": self.classes, "kind": "token"}),
                             pd.DataFrame({"sample": self.sample, "position": self.position}))


def build_corpus(encode: Callable[[str], list[int]], *, n_samples: int = 800, words: int = 24,
                 p_class: float = 0.25, seed: int = 0) -> PlantedCorpus:
    """Sentences of ``words`` one-token words; each word is a class word with probability ``p_class``."""
    rng = np.random.default_rng(seed)
    one_token = {}
    for w in FILLER + [w for _, ws in CLASSES.values() for w in ws.split()]:
        ids = encode(" " + w)
        if len(ids) == 1:
            one_token[w] = ids[0]
    classes = list(CLASSES)
    vocab = {c: [w for w in CLASSES[c][1].split() if w in one_token] for c in classes}
    filler = [w for w in FILLER if w in one_token]
    texts, smp, pos, tok, cls = [], [], [], [], []
    for s in range(n_samples):
        chosen = []
        for p in range(words):
            if rng.random() < p_class:
                c = int(rng.integers(len(classes)))
                w = vocab[classes[c]][int(rng.integers(len(vocab[classes[c]])))]
            else:
                c, w = -1, filler[int(rng.integers(len(filler)))]
            chosen.append(w)
            smp.append(s)
            pos.append(p)
            tok.append(one_token[w])
            cls.append(c)
        texts.append(" " + " ".join(chosen))
    return PlantedCorpus(texts, np.asarray(smp), np.asarray(pos), np.asarray(tok), np.asarray(cls), classes,
                         [CLASSES[c][0] for c in classes])
