"""The evaluation suite on planted truth: k-sparse probing finds the planted latent at k = 1 and
beats rotated neurons, absorption detects a planted absorbing pair and gives a clean dictionary
about 0, and stage=evaluate over two dictionaries writes the side-by-side table and plots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from core.errors import ConfigError

T = 40  # tokens per sample
WORDS = [" apple", " anchor", " ant", " bear", " bird", " boat", " cat", " cup", " cow", " dog", " door", " dust"]


def rotated_store(root: Path, n_samples=240, d=12, seed=0):
    """Dimensions of the store mix planted classes by a random rotation; the SAE un-mixes them
    (latent f = class f), so latents are the planted features and neurons are mixtures. Samples
    of group "a" carry class 0 on half their tokens, the others on 2%."""
    from core.checkpoint import save_sae
    from core.dictionaries import DictionaryConfig, build_dictionary
    from core.enrich.concepts import ConceptMatrix
    from core.samples import Sample
    from core.store import ShardWriter, write_samples_tsv

    rng = np.random.default_rng(seed)
    n = n_samples * T
    group = np.where(np.arange(n_samples) % 3 == 0, "a", "b")
    p = np.full((n, d), 0.08)
    p[:, 0] = np.where(group[np.arange(n) // T] == "a", 0.5, 0.02)
    member = rng.random((n, d)) < p
    z = member * rng.uniform(0.5, 2, (n, d))
    R = np.linalg.qr(rng.normal(size=(d, d)))[0]
    x = (z @ R.T).astype(np.float32)  # x = R z
    sample, position = np.arange(n) // T, np.arange(n) % T
    with ShardWriter(root / "store", model="toy", hook="h", d=d, shard_tokens=4096,
                     meta={"vocab": WORDS}) as w:
        w.add(torch.as_tensor(x), torch.as_tensor(sample), torch.as_tensor(position),
              torch.as_tensor(rng.integers(0, len(WORDS), n)), samples_done=n_samples)
    write_samples_tsv(root / "store" / "samples.tsv", [Sample(f"s{i}", "x", {"group": g}) for i, g in enumerate(group)])
    sae = build_dictionary(DictionaryConfig("relu", d_in=d, d_sae=d))
    with torch.no_grad():
        sae.W_enc.copy_(torch.as_tensor(R, dtype=torch.float32))  # z = R^T x
        sae.W_dec.copy_(torch.as_tensor(R.T, dtype=torch.float32))
        sae.b_enc.fill_(-1e-3)  # float32 rounding of R z leaks other classes into tiny positive values
        sae.b_dec.zero_()
    save_sae(sae, root / "sae")
    tokens = pd.DataFrame({"sample": sample, "position": position})
    concepts = pd.DataFrame({"name": [f"class{f}" for f in range(d)], "kind": "token"})
    ConceptMatrix(sp.csr_matrix(member.astype(np.int32)), concepts, tokens).save(root / "concepts")
    pd.DataFrame({"basis": "sae", "split": "valid", "feature": range(d), "concept": concepts["name"],
                  "f1": 0.9}).to_csv(root / "enrichment.tsv", sep="\t", index=False)
    return R


def _ctx(root):
    from core.checkpoint import load_sae
    from core.eval.base import EvalContext

    return EvalContext(None, load_sae(root / "sae"), root / "sae", root / "store", root / "out", root)


def test_k_sparse_probing_finds_the_planted_latent_at_k1(tmp_path):
    from core.eval.sparse_probing import SparseProbingEval

    rotated_store(tmp_path)
    tok = SparseProbingEval({"level": "token", "concepts": str(tmp_path / "concepts"), "max_tasks": 4}).run(_ctx(tmp_path))
    k1 = [r for r in tok.tasks if r["k"] == 1 and r["basis"] == "sae"]
    assert len(k1) == 4
    for r in k1:
        assert r["features"] == [int(r["task"].removeprefix("class"))]
        assert r["balanced_accuracy"] > 0.97
    assert tok.sae["1"] > tok.neuron["1"] + 0.1
    smp = SparseProbingEval({"columns": ["group"], "min_per_class": 5}).run(_ctx(tmp_path))
    assert smp.n_tasks == 2
    assert all(r["features"] == [0] for r in smp.tasks if r["k"] == 1 and r["basis"] == "sae")
    assert smp.sae["1"] > 0.95
    with pytest.raises(ConfigError, match="columns"):
        SparseProbingEval({"columns": ["nope"]}).run(_ctx(tmp_path))


def planted_letters(absorb: bool, seed=0, n=6000, d=64):
    """Word tokens whose activation is its first letter's direction plus a word direction; the SAE
    has one latent per letter and one per word. With ``absorb``, the word " short" (4% of the
    s-words) switches the s latent off and its own latent carries the letter direction."""
    from core.dictionaries import DictionaryConfig, build_dictionary

    rng = np.random.default_rng(seed)
    letters = "abcs"
    words = [f" {c}{i}" for c in letters for i in range(12)] + [" short"]
    letter = np.array([letters.index(w[1]) for w in words])
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    P, E = Q[:, :4].T, Q[:, 4:4 + len(words)].T  # letter and word directions, orthonormal
    weights = np.ones(len(words))
    weights[-1] = 12 * 0.042  # " short" is ~4% of the s tokens
    token = rng.choice(len(words), n, p=weights / weights.sum())
    X = P[letter[token]] + 0.5 * E[token] + rng.normal(0, 0.01, (n, d))
    n_lat = 4 + len(words)
    enc, dec = np.zeros((d, n_lat)), np.zeros((n_lat, d))
    enc[:, :4], dec[:4] = P.T, P
    enc[:, 4:], dec[4:] = E.T, E
    if absorb:
        s, short = 3, len(words) - 1
        enc[:, s] = P[s] - 2.2 * E[short]  # the s latent stays silent on " short"
        enc[:, 4 + short] = 2 * E[short]
        v = P[s] + 0.5 * E[short]
        dec[4 + short] = v / np.linalg.norm(v)
    sae = build_dictionary(DictionaryConfig("relu", d_in=d, d_sae=n_lat))
    with torch.no_grad():
        sae.W_enc.copy_(torch.as_tensor(enc, dtype=torch.float32))
        sae.W_dec.copy_(torch.as_tensor(dec, dtype=torch.float32))
        sae.b_enc.fill_(-0.1)
        sae.b_dec.zero_()
        F = sae.encode(torch.as_tensor(X, dtype=torch.float32)).numpy()
    return X.astype(np.float32), sp.csr_matrix(F), dec.astype(np.float32), token, letter[token], letters


def test_absorption_detects_a_planted_absorbing_pair_and_a_clean_dictionary_scores_zero():
    from core.eval.absorption import AbsorptionConfig, absorption_scores
    from core.store import holdout_mask

    cfg = AbsorptionConfig(letters="abcs", min_per_letter=10, test_fraction=0.5, seed=2)
    assert holdout_mask(np.array([48]), 0.5, 2 + 211).item()  # words split train/test; " short" is a test word
    X, F, W, token, letter, _ = planted_letters(absorb=False)
    clean = absorption_scores(X, F, W, token, letter, cfg)
    assert clean.probe_accuracy > 0.99
    assert clean.mean_absorption_fraction < 0.01 and clean.full_absorption_rate < 0.01
    assert [r["main_latents"] for r in clean.letters] == [[0], [1], [2], [3]]
    X, F, W, token, letter, _ = planted_letters(absorb=True)
    ab = absorption_scores(X, F, W, token, letter, cfg)
    s = next(r for r in ab.letters if r["letter"] == "s")
    test_s = (letter == 3) & holdout_mask(token, 0.5, 2 + 211).numpy()
    share = float((token[test_s] == 48).mean())
    assert s["main_latents"] == [3]
    assert s["full_absorption_rate"] == pytest.approx(share, abs=0.01)
    assert s["absorption_fraction"] == pytest.approx(share, abs=0.02)
    assert s["top_absorber"] == 4 + 48
    assert all(r["absorption_fraction"] < 0.01 for r in ab.letters if r["letter"] != "s")


def test_unknown_eval_names_list_the_valid_ones(tmp_path):
    from omegaconf import OmegaConf

    from core.stages import evaluate

    with pytest.raises(ConfigError) as err:
        evaluate.run(OmegaConf.create({"evals": ["core", "absorbtion"]}), tmp_path)
    for name in ("absorption", "autointerp", "core", "sparse_probing", "spliced"):
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="valid options under evaluate.core"):
        evaluate.run(OmegaConf.create({"evals": ["core"], "evaluate": {"core": {"splitt": "val"}}}), tmp_path)


def _two_dictionaries(tmp_path):
    from core.checkpoint import load_sae, save_sae

    rotated_store(tmp_path)
    noisy = load_sae(tmp_path / "sae")
    with torch.no_grad():
        noisy.W_enc.add_(0.5 * torch.randn_like(noisy.W_enc, generator=torch.Generator().manual_seed(0)))
    save_sae(noisy, tmp_path / "noisy" / "sae")
    return [f"++evaluate.saes=[{tmp_path / 'sae'},{tmp_path / 'noisy' / 'sae'}]", "++evaluate.names=[planted,noisy]",
            f"++data.root={tmp_path / 'store'}", "++data.holdout_fraction=0.2",
            "++evaluate.sparse_probing.columns=[group]", "++evaluate.sparse_probing.min_per_class=5",
            "++evaluate.absorption.letters=abcd", "++evaluate.absorption.min_per_letter=5",
            "++evaluate.autointerp.explainer=concepts", "++evaluate.autointerp.scorers=[concept]",
            f"++evaluate.autointerp.enrichment={tmp_path / 'enrichment.tsv'}",
            f"++evaluate.autointerp.concepts={tmp_path / 'concepts'}", "++evaluate.autointerp.n_features=12",
            "++evaluate.autointerp.examples={min_examples:100,part_windows:1000}"]


def _check_side_by_side(run_dir):
    table = pd.read_csv(run_dir / "comparison.tsv", sep="\t", index_col="dictionary")
    assert list(table.index) == ["planted", "noisy"]
    for col in ("core.fvu", "core.l0", "sparse_probing.sae_k1", "sparse_probing.neuron_k1",
                "absorption.mean_absorption_fraction", "autointerp.concept_own", "autointerp.concept_shuffled"):
        assert col in table.columns
        assert (run_dir / "figures" / f"{col}.png").exists()
    assert table.loc["planted", "core.fvu"] < 1e-3 < table.loc["noisy", "core.fvu"]
    assert table.loc["planted", "autointerp.concept_own"] > 0.95
    assert abs(table.loc["planted", "autointerp.concept_shuffled"] - 0.5) < 0.06
    assert table.loc["planted", "sparse_probing.sae_k1"] > 0.95
    for name in ("planted", "noisy"):
        m = json.loads((run_dir / name / "metrics.json").read_text())
        assert set(m) == {"core", "sparse_probing", "absorption", "autointerp"}
    assert "| planted |" in (run_dir / "comparison.md").read_text()


EVALS = "evals=[core,sparse_probing,absorption,autointerp]"


def test_evaluate_stage_on_two_dictionaries_writes_the_side_by_side_table(tmp_path):
    from hydra import compose, initialize_config_dir

    from core.cli import CONF_DIR
    from core.stages import evaluate

    overrides = _two_dictionaries(tmp_path)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["stage=evaluate", EVALS, *overrides])
    evaluate.run(cfg, tmp_path / "eval")
    _check_side_by_side(tmp_path / "eval")


@pytest.mark.slow
def test_evaluate_command_on_two_dictionaries(tmp_path):
    """The command itself, as a user types it."""
    args = [sys.executable, "-m", "core.cli", "stage=evaluate", EVALS, *_two_dictionaries(tmp_path),
            f"hydra.run.dir={tmp_path / 'eval'}"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_side_by_side(tmp_path / "eval")
    bad = subprocess.run(args[:4] + ["evals=[core,bogus]", f"hydra.run.dir={tmp_path / 'bad'}"],
                         capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "bogus" in bad.stderr and "sparse_probing" in bad.stderr and "absorption" in bad.stderr
