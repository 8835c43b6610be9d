"""The bad-input matrix: every malformed file in ``tests/bad_inputs.py`` goes through the command
a user would type. Each must end in one ``sparsescope: error:`` line naming the file (exit 2),
or, where skipping or chunking is configured, succeed and say what it skipped; never a
traceback, and nothing already in the run folder is replaced."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from bad_inputs import CASES, Case

PREVIOUS = {"results.json": '{"previous": "run"}\n', "layer1/sae/cfg.json": '{"kept": true}\n',
            ".hydra/config.yaml": "previous: config\n"}


def sparsescope(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The ``sparsescope`` entry point in this process (``main()`` as the console script calls
    it): the same Hydra composition, error handling and exit code as a shell, without paying
    the interpreter and torch start-up 28 times. ``test_cli.py`` covers the real subprocess."""
    from hydra.core.global_hydra import GlobalHydra

    from core import cli

    GlobalHydra.instance().clear()
    err, out = io.StringIO(), io.StringIO()
    argv, root_handlers = sys.argv, list(logging.getLogger().handlers)
    code = 0
    try:
        sys.argv = ["sparsescope", *args]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), contextlib.chdir(cwd):
            try:
                cli.main()
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
        logging.getLogger().handlers[:] = root_handlers
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def snapshot(run: Path) -> dict[str, str]:
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in run.rglob("*") if p.is_file() and p.name != "cli.log"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_one_message_and_keeps_the_run(case: Case, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    args = case.build(inputs)
    run = tmp_path / "run"
    if case.exit_code != 0:
        for rel, text in PREVIOUS.items():
            (run / rel).parent.mkdir(parents=True, exist_ok=True)
            (run / rel).write_text(text)
    before = snapshot(run) if run.exists() else {}
    out = sparsescope([*args, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    if case.exit_code == 0:
        assert out.returncode == 0, out.stderr[-2000:]
        assert case.results(json.loads((run / "results.json").read_text()))
        return
    assert out.returncode != 0
    if case.exit_code > 0:
        assert out.returncode == case.exit_code, out.stderr[-2000:]
        errors = [line for line in out.stderr.splitlines() if line.startswith("sparsescope: error:")]
        assert len(errors) == 1, out.stderr[-2000:]
        message = errors[0]
        assert case.expect in message, message
        assert "fix:" in message, message
        named = [a.split("=", 1)[1] for a in args if "=" in a and "/" in a.split("=", 1)[1]]
        assert not named or any(n in message or Path(n).name in message for n in named), message
    else:
        assert case.expect in out.stderr, out.stderr[-2000:]
    after = snapshot(run)
    assert {k: after.get(k) for k in before} == before, "a file already in the run folder was replaced"
