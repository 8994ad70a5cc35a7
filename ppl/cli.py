"""The ``ppl`` command line: ``ppl demo``, ``ppl run``, ``ppl bench``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np

DESCRIPTION = """\
Probabilistic programs on JAX.

  ppl demo                                  eight schools with NUTS: summary + trace plot
  ppl run model.py:model --data data.json   sample a model, write ArviZ NetCDF, print summary
  ppl bench [SCRIPT]                        run a benchmark script from bench/
"""


def _load_model(spec: str):
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise SystemExit(f"ppl run: expected FILE.py:FUNCTION, got {spec!r}")
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"ppl run: no such file {path!r}")
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as err:
        raise SystemExit(f"ppl run: {path!r} line {err.lineno}: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - any error of the user's file, named in one line
        frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == file]
        where = f" line {frames[-1].lineno}" if frames else ""
        raise SystemExit(
            f"ppl run: importing {path!r} raised {type(err).__name__}{where}: {err}"
        ) from None
    if not hasattr(module, name):
        raise SystemExit(f"ppl run: {path!r} defines no function {name!r}")
    return getattr(module, name)


def _load_data(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path) as handle:
            data = json.load(handle)
    except OSError as err:
        raise SystemExit(f"ppl run: cannot read --data {path!r}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise SystemExit(f"ppl run: --data {path!r} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"ppl run: {path!r} must hold a JSON object of argument -> value")
    arrays = {}
    for key, value in data.items():
        if not isinstance(value, list):
            arrays[key] = value
            continue
        try:
            arrays[key] = np.asarray(value)
        except ValueError:
            raise SystemExit(
                f"ppl run: --data {path!r}: {key!r} is not a rectangular array (ragged lists)"
            ) from None
    return arrays


def _check_output(path: str | None) -> None:
    """Refuse an output file that cannot be written before the sampler runs."""
    if path is None:
        return
    if Path(path).is_dir():
        raise SystemExit(f"ppl run: --out {path!r} is a folder; give a file name such as run.nc")
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise SystemExit(f"ppl run: --out {path!r}: no such folder {str(folder)!r}")


MCMC_ONLY = ("chains", "warmup", "draws")
SMC_ONLY = ("particles", "runs")


def _sampler_options(args) -> tuple:
    """The sampler and its keywords from ``ppl run``'s options; an option of the other method
    is refused by name rather than dropped."""
    unused = SMC_ONLY if args.method == "mcmc" else MCMC_ONLY
    given = [f"--{name}" for name in unused if getattr(args, name) is not None]
    if given:
        raise SystemExit(
            f"ppl run: {', '.join(given)} do(es) not apply to --method {args.method} "
            f"(MCMC: --{', --'.join(MCMC_ONLY)}; SMC: --{', --'.join(SMC_ONLY)})"
        )
    options = {"seed": args.seed, "progress_bar": not args.no_progress}
    if args.kernel is not None:
        options["kernel"] = args.kernel
    wanted = MCMC_ONLY if args.method == "mcmc" else SMC_ONLY
    options.update({k: getattr(args, k) for k in wanted if getattr(args, k) is not None})
    return args.method, options


def _run(args) -> None:
    import ppl

    method, options = _sampler_options(args)
    _check_output(args.out)
    model = _load_model(args.model)
    data = _load_data(args.data)
    sampler = ppl.smc if method == "smc" else ppl.mcmc
    try:
        post = sampler(model, **options, **data)
    except (ValueError, TypeError) as err:  # bad options or data: the message names them
        raise SystemExit(f"ppl run: {err}") from err
    except RuntimeError as err:
        if not str(err).startswith("the model raised"):
            raise
        raise SystemExit(f"ppl run: {err}") from err  # the model's own error, named
    print(post)
    print(post.summary().to_string())  # every column, however wide the table
    print(post.diagnose())
    if args.out:
        post.to_arviz().to_netcdf(args.out)
        print(f"wrote {args.out}")


def _bench(args) -> None:
    bench_dir = Path(__file__).resolve().parent.parent / "bench"
    scripts = sorted(p.name for p in bench_dir.glob("*.py")) if bench_dir.is_dir() else []
    if not args.script:
        print("benchmark scripts:", ", ".join(scripts) or "none found (run from a source checkout)")
        return
    name = args.script if args.script.endswith(".py") else f"{args.script}.py"
    if name not in scripts:
        raise SystemExit(f"ppl bench: unknown script {args.script!r}; choose from {scripts}")
    raise SystemExit(subprocess.call([sys.executable, str(bench_dir / name), *args.rest]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="ppl", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="eight schools with NUTS (the README's main job)")
    demo.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the demo")

    run = sub.add_parser("run", help="sample a model from a Python file")
    run.add_argument("model", help="FILE.py:FUNCTION naming the model function")
    run.add_argument("--data", help="JSON object of keyword arguments for the model")
    run.add_argument("--method", choices=["mcmc", "smc"], default="mcmc")
    run.add_argument(
        "--kernel",
        help="mcmc: nuts (default), hmc, mala or rwmh; smc rejuvenation: rwmh (default), mala "
        "or hmc",
    )
    run.add_argument("--chains", type=int, help="mcmc: chains (default 4)")
    run.add_argument("--warmup", type=int, help="mcmc: warm-up iterations (default 1000)")
    run.add_argument("--draws", type=int, help="mcmc: draws per chain (default 1000)")
    run.add_argument("--particles", type=int, help="smc: particles (default 2000)")
    run.add_argument("--runs", type=int, help="smc: independent runs (default 1)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", help="write the ArviZ data to this NetCDF file")
    run.add_argument("--no-progress", action="store_true")

    bench = sub.add_parser("bench", help="run a benchmark script from bench/")
    bench.add_argument("script", nargs="?", help="script name (omit to list them)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the script")

    # argparse.REMAINDER does not take options that come first (`ppl demo --chains 2`), so the
    # arguments after `demo` and after `bench SCRIPT` are passed on as they are
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from ppl import demo as demo_module

        demo_module.main(argv[1:])
    elif argv[:1] == ["bench"] and len(argv) > 1 and not argv[1].startswith("-"):
        _bench(argparse.Namespace(script=argv[1], rest=argv[2:]))
    else:
        args = parser.parse_args(argv)
        if args.command == "run":
            _run(args)
        else:
            _bench(args)


if __name__ == "__main__":
    main()
