"""The ``ppl`` command line: ``ppl demo``, ``ppl run``, ``ppl bench``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
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
    module_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise SystemExit(f"ppl run: {path!r} defines no function {name!r}")
    return getattr(module, name)


def _load_data(path: str | None) -> dict:
    if path is None:
        return {}
    with open(path) as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise SystemExit(f"ppl run: {path!r} must hold a JSON object of argument -> value")
    return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in data.items()}


def _run(args) -> None:
    import ppl

    model = _load_model(args.model)
    data = _load_data(args.data)
    if args.method == "smc":
        post = ppl.smc(model, particles=args.particles, seed=args.seed, **data)
    else:
        post = ppl.mcmc(
            model,
            kernel=args.kernel,
            chains=args.chains,
            warmup=args.warmup,
            draws=args.draws,
            seed=args.seed,
            progress_bar=not args.no_progress,
            **data,
        )
    print(post)
    print(post.summary())
    if str(post.attrs.get("method", "")).startswith("mcmc"):
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
    run.add_argument("--kernel", default="nuts", help="nuts, hmc, mala or rwmh (mcmc)")
    run.add_argument("--chains", type=int, default=4)
    run.add_argument("--warmup", type=int, default=1000)
    run.add_argument("--draws", type=int, default=1000)
    run.add_argument("--particles", type=int, default=2000, help="particles (smc)")
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
