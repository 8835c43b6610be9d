"""Regenerate ``imgt_numbering.tsv.gz``: ANARCII's IMGT numbering of the case study's default chains.

    python case_studies/antibody_regions/make_imgt_numbering.py [hydra overrides...]

Numbers the chains the config selects (cached under the user cache dir) and writes them
beside this script with the ANARCII version and mode they came from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

from core.cli import CONF_DIR
from domains.protein.imgt import export_numbering, number_chains
from domains.protein.studies.antibody_regions import load_chains


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["case_study=antibody_regions", *overrides])
    cs = cfg.case_study
    seqs = [r.sequence for r in load_chains(cs)]
    number_chains(seqs, mode=str(cs.imgt.mode), batch_size=int(cs.imgt.batch_size), ncpu=int(cs.imgt.ncpu))
    out = export_numbering(seqs, Path(__file__).with_name("imgt_numbering.tsv.gz"), mode=str(cs.imgt.mode))
    print(out)


if __name__ == "__main__":
    main(sys.argv[1:])
