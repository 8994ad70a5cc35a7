"""The ``ppl`` command line: run a model file, write NetCDF, list benchmarks, help."""

import json

import arviz as az
import pytest

from ppl import cli

pytestmark = pytest.mark.arviz  # run again under ArviZ 1.x by .ci/run

MODEL_FILE = """
import numpyro, numpyro.distributions as dist

def model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    with numpyro.plate("n", len(y)):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
"""


def test_run_writes_netcdf_and_prints_summary(tmp_path, capsys):
    (tmp_path / "m.py").write_text(MODEL_FILE)
    (tmp_path / "d.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0, 2.0]}))
    out = tmp_path / "post.nc"
    cli.main(
        [
            "run",
            f"{tmp_path / 'm.py'}:model",
            "--data",
            str(tmp_path / "d.json"),
            "--chains",
            "2",
            "--warmup",
            "100",
            "--draws",
            "100",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert "mu" in printed and "r_hat" in printed
    idata = az.from_netcdf(out)
    assert idata.posterior["mu"].shape == (2, 100)
    # exact posterior: mean 5 / 4.04 = 1.238, sd 0.50; 4 MCSE at ESS >= 150 is 0.16
    assert abs(float(idata.posterior["mu"].mean()) - 1.238) < 0.16


def test_bad_model_spec_and_listing(tmp_path, capsys):
    with pytest.raises(SystemExit, match="expected FILE.py:FUNCTION"):
        cli.main(["run", "no_colon"])
    with pytest.raises(SystemExit, match="no such file"):
        cli.main(["run", f"{tmp_path / 'missing.py'}:model"])
    cli.main(["bench"])
    assert "smc_vs_blackjax.py" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "ppl demo" in capsys.readouterr().out
