"""Every tutorial runs end to end (in its short ``PPL_QUICK=1`` form).

Marked ``tutorial``: deselected from the default suite (each is a fresh process that compiles
all its programs, ~4 minutes of the 2-core budget for the five) and run by ``.ci/run`` as its
own step, ``python -m pytest -n 2 -m tutorial``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = sorted((Path(__file__).resolve().parent.parent / "tutorials").glob("*.py"))


pytestmark = pytest.mark.tutorial


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    env = dict(os.environ, PPL_QUICK="1", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
