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
    assert "2 chain(s) x 100 draws" in printed  # the diagnostics report
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


def test_demo_and_bench_take_their_options_first(monkeypatch):
    """`ppl demo --chains 2 ...` and `ppl bench SCRIPT --quick`: options right after the
    subcommand reach the demo / the script (argparse.REMAINDER alone refused them)."""
    from ppl import demo

    seen = {}
    monkeypatch.setattr(demo, "main", lambda argv: seen.setdefault("demo", argv))
    monkeypatch.setattr(cli, "_bench", lambda args: seen.setdefault("bench", args))
    cli.main(["demo", "--no-progress", "--chains", "2"])
    cli.main(["bench", "fkc_overhead", "--particles", "10"])
    assert seen["demo"] == ["--no-progress", "--chains", "2"]
    assert (seen["bench"].script, seen["bench"].rest) == ("fkc_overhead", ["--particles", "10"])


def test_run_smc_takes_its_options_and_refuses_the_others(tmp_path, capsys):
    """`--method smc` passes --kernel, --runs and --no-progress on to ppl.smc, prints the SMC
    diagnosis, refuses MCMC-only options by name, and reports a bad kernel in one line."""
    (tmp_path / "m.py").write_text(MODEL_FILE)
    (tmp_path / "d.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0, 2.0]}))
    base = ["run", f"{tmp_path / 'm.py'}:model", "--data", str(tmp_path / "d.json")]
    with pytest.raises(SystemExit, match="--chains do.*--method smc"):
        cli.main([*base, "--method", "smc", "--chains", "7"])
    with pytest.raises(SystemExit, match="--particles do.*--method mcmc"):
        cli.main([*base, "--particles", "100"])
    with pytest.raises(SystemExit, match="ppl run: .*kernel"):
        cli.main([*base, "--kernel", "nutz", "--no-progress"])
    smc_options = ["--method", "smc", "--kernel", "hmc", "--particles", "200", "--runs", "2"]
    cli.main([*base, *smc_options, "--no-progress"])
    captured = capsys.readouterr()
    assert "smc/tempered/hmc" in captured.out and "ess_runs" in captured.out
    assert "2 run(s)" in captured.out  # the SMC diagnosis
    assert "%|" not in captured.err  # no progress bar


def test_bad_data_output_and_a_failing_model_are_one_line_errors(tmp_path):
    """Each used to end in a traceback (JSONDecodeError, FileNotFoundError, NumPy's ragged
    array error, the model's error; a missing output folder only after sampling)."""
    model_file = tmp_path / "model.py"
    model_file.write_text(MODEL_FILE + "\ndef broken(y=None):\n    raise KeyError('oops')\n")
    good = tmp_path / "data.json"
    good.write_text(json.dumps({"y": [0.1, 0.2]}))
    malformed = tmp_path / "bad.json"
    malformed.write_text("{not json")
    ragged = tmp_path / "ragged.json"
    ragged.write_text(json.dumps({"y": [[1, 2], [3]]}))
    spec = f"{model_file}:model"
    cases = [
        (["--data", str(malformed)], "is not valid JSON"),
        (["--data", str(tmp_path / "missing.json")], "cannot read --data"),
        (["--data", str(ragged)], "'y' is not a rectangular array"),
        (["--data", str(good), "--out", str(tmp_path / "no" / "p.nc")], "no such folder"),
        # a folder as --out used to fail in h5py after sampling
        (["--data", str(good), "--out", str(tmp_path)], "is a folder; give a file name"),
    ]
    for options, message in cases:
        with pytest.raises(SystemExit, match=message):
            cli.main(["run", spec, *options, "--no-progress"])
    with pytest.raises(SystemExit, match="the model raised while being traced"):
        cli.main(["run", f"{model_file}:broken", "--data", str(good), "--no-progress"])


def test_a_model_file_that_fails_to_import_is_a_one_line_error(tmp_path):
    """A syntax error or an exception while importing the model file used to print a raw
    traceback; now the file, the line and the error."""
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def model(:\n    pass\n")
    with pytest.raises(SystemExit, match=r"syntax\.py' line 1: "):
        cli.main(["run", f"{syntax}:model", "--no-progress"])
    raising = tmp_path / "raising.py"
    raising.write_text("import math\n\nVALUE = math.sqrt(-1)\n")
    with pytest.raises(SystemExit, match=r"raising\.py' raised ValueError line 3: math domain"):
        cli.main(["run", f"{raising}:model", "--no-progress"])
