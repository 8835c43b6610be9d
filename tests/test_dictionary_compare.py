"""case_study.dictionary=both: one sub-run per dictionary, shared artefacts made once, figures side by side."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from domains.text import dictionary_compare as dc


def _fake_study(calls: list[str]):
    """A study whose SAE figures depend on the dictionary and whose bias profile does not; it
    makes ``profile.tsv`` only when missing, as the real studies cache their steps."""

    def run(cfg, run_dir):
        choice = cfg.case_study.dictionary
        calls.append(choice)
        prof = run_dir / "profile.tsv"
        if not prof.exists():
            calls.append(f"profile:{choice}")
            prof.write_text("occupation\tdiff\n")
        (run_dir / "acts").mkdir(exist_ok=True)
        (run_dir / "acts" / "shard0.bin").write_bytes(b"x" * 8)
        f1 = {"study": 0.4, "general": 0.7}[choice]
        return {"dictionary": {"dictionary": choice},
                "enrichment": {"gender_concepts": [{"concept": "male_word", "basis": "sae", "f1_test": f1},
                                                   {"concept": "male_word", "basis": "neuron", "f1_test": 0.3}]},
                "steering": {"diffmean": {"bias_metric": 0.5}, "sae": {"bias_metric": 1 - f1, "ok": True}},
                "timings_s": {"all": 1.0}}

    return run


def _cfg():
    return OmegaConf.create({"case_study": {"dictionary": "both", "shared_artifacts": ["profile.tsv", "acts"],
                                            "compare": ["enrichment.gender_concepts", "steering"]}})


def test_both_dictionaries_run_once_each_and_share_what_does_not_depend_on_them(tmp_path):
    calls: list[str] = []
    out = dc.run_both(_fake_study(calls), _cfg(), tmp_path)
    assert calls == ["study", "profile:study", "general"]
    assert (tmp_path / "general" / "profile.tsv").stat().st_ino == (tmp_path / "study" / "profile.tsv").stat().st_ino
    assert out["dictionary"] == "both" and set(out["by_dictionary"]) == {"study", "general"}
    rows = {r["figure"]: r for r in out["comparison"]}
    assert rows["enrichment.gender_concepts.male_word/sae.f1_test"] == {
        "figure": "enrichment.gender_concepts.male_word/sae.f1_test", "study": 0.4, "general": 0.7}
    assert rows["steering.diffmean.bias_metric"]["study"] == rows["steering.diffmean.bias_metric"]["general"] == 0.5
    assert "steering.sae.ok" not in rows and not any(k.startswith("timings") for k in rows)
    assert json.loads((tmp_path / "general" / "results.json").read_text())["dictionary"]["dictionary"] == "general"

    again: list[str] = []
    assert dc.run_both(_fake_study(again), _cfg(), tmp_path)["comparison"] == out["comparison"]
    assert again == []


def test_the_comparison_prints_as_a_markdown_table(tmp_path, capsys):
    combined = dc.run_both(_fake_study([]), _cfg(), tmp_path)
    (tmp_path / "results.json").write_text(json.dumps(combined))
    assert dc.main([str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| figure | study dictionary | general dictionary |"
    assert "| `enrichment.gender_concepts.male_word/sae.f1_test` | 0.4 | 0.7 |" in table


def test_a_folder_without_a_both_run_gets_one_clear_error(tmp_path, capsys):
    assert dc.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results.json" in err and str(tmp_path) in err
    (tmp_path / "results.json").write_text(json.dumps({"dictionary": {"dictionary": "study"}}))
    assert dc.main([str(tmp_path)]) == 2
    assert "rerun the study with case_study.dictionary=both" in capsys.readouterr().err


def test_a_decorated_study_runs_both_only_when_asked(tmp_path):
    calls: list[str] = []
    study = dc.per_dictionary(_fake_study(calls))
    assert study(_cfg(), tmp_path / "both")["dictionary"] == "both" and calls == ["study", "profile:study", "general"]
    one = _cfg()
    one.case_study.dictionary = "general"
    calls.clear()
    (tmp_path / "one").mkdir()
    assert study(one, tmp_path / "one")["dictionary"] == {"dictionary": "general"} and calls[0] == "general"
