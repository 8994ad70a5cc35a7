"""NUTS of this library against numpyro and BlackJAX, in one process.

Every library runs the same numpyro model on the same unconstrained parametrisation (numpyro's
``initialize_model`` gives BlackJAX its potential), with the same number of chains, warm-up
and draws, the same metric (diagonal or dense), target acceptance 0.8, maximum tree depth 10,
the same seed, and all chains vectorised in one program (``jax.vmap``; numpyro with
``chain_method="vectorized"``). Warm-up is Stan's windowed adaptation in all three
(``blackjax.window_adaptation`` for BlackJAX).

Reported per model and library:

- ``first (s)``: wall time of the first call (tracing + compilation + warm-up + sampling),
  i.e. the time to first draw, measured in a fresh Python process for each library and model
  (after importing the library and one trivial JAX operation), so that no library profits from what
  another compiled before it in the same process (numpyro's eagerly executed distribution
  code, JAX's first-use set-up);
- ``warm (s)``: wall time of a further, identical call, the best of ``--repeats`` (3) such
  calls (see below for what each library reuses);
- ``min ESS``: the smallest ArviZ bulk ESS over all scalar latent parameters (constrained space);
- ``ESS/s``: min ESS / warm time, and the ratio of ppl's ESS/s to each peer's;
- ``first ppl/numpyro``: ppl's first-call time divided by numpyro's (time to first draw);
- the geometric mean over models of those ratios.

Models: eight schools (non-centred), logistic regression on simulated 1000 x 25 data (fixed
seed), and the posteriordb posteriors arK, kidiq (dense metric) and gp_regr.

What "first" and "warm" measure in each library (both calls with the same model, data,
kernel settings, sizes and seed):

- ppl: ``ppl.mcmc`` caches its compiled program, so the first call traces, compiles, warms up
  and samples, and the warm call compiles nothing (warm-up + sampling only);
- numpyro: ``MCMC.run`` with ``chain_method="vectorized"`` traces and compiles again on every
  call, so its warm time still includes compilation;
- BlackJAX: the whole run (window adaptation + sampling) is one ``jax.jit`` function; the
  first call compiles it, the warm call reuses it.

ESS/s always uses the warm time. ``first ppl/numpyro`` is the ratio of the first-call times,
i.e. of the time to first draw from a cold start. ``ppl.mcmc`` runs with
``log_likelihood=False`` (the peers compute no pointwise log-likelihood); every model, kidiq's
improper flat prior included, is given to it as it is.

Usage::

    python bench/nuts_vs_peers.py            # 4 chains x 1000 warm-up x 1000 draws
    python bench/nuts_vs_peers.py --quick    # 4 chains x 500 x 500
    python bench/nuts_vs_peers.py --only eight_schools,logistic --libs ppl,numpyro
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import numpyro.distributions as dist  # noqa: E402

from models import posteriordb  # noqa: E402

TARGET_ACCEPT = 0.8
MAX_TREE_DEPTH = 10
LIBS = ("ppl", "numpyro", "blackjax")


class Case(NamedTuple):
    model: Callable[..., None]
    kwargs: dict[str, Any]
    dense_mass: bool


def logistic_regression(X, y) -> None:
    """alpha ~ N(0, 1); beta_d ~ N(0, 1); y_i ~ Bernoulli(logit^-1(alpha + X_i beta))."""
    X = jnp.asarray(X)
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
    with numpyro.plate("D", X.shape[-1]):
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
    with numpyro.plate("N", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=alpha + X @ beta), obs=y)


def logistic_data(n: int = 1000, d: int = 25, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    beta = rng.normal(0.0, 0.5, size=d)
    logits = 0.3 + X @ beta
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logits))).astype(np.float64)
    return {"X": X, "y": y}


def cases() -> dict[str, Case]:
    def pdb(name: str, dense: bool) -> Case:
        e = posteriordb.load(name)
        # Python scalars (arK's lag order K) are static: bind them, so that every array
        # argument can be a traced argument (numpyro's jit_model_args)
        static = {k: v for k, v in e.kwargs.items() if isinstance(v, int | float)}
        arrays = {k: v for k, v in e.kwargs.items() if k not in static}
        return Case(functools.partial(e.model, **static), arrays, dense)

    return {
        "eight_schools": pdb("eight_schools-eight_schools_noncentered", False),
        "logistic": Case(logistic_regression, logistic_data(), False),
        "arK": pdb("arK-arK", False),
        "kidiq": pdb("kidiq-kidscore_interaction", True),
        "gp_regr": pdb("gp_pois_regr-gp_regr", False),
    }


# --------------------------------------------------------------------------------------------
# runners: each returns a function run(seed) -> (latent samples (chains, draws, ...), n_div)
# that blocks until the draws are on the host
# --------------------------------------------------------------------------------------------


def latent_names(case: Case) -> list[str]:
    from numpyro import handlers
    from numpyro.infer.initialization import init_to_uniform

    model = handlers.substitute(handlers.seed(case.model, 0), substitute_fn=init_to_uniform)
    tr = handlers.trace(model).get_trace(**case.kwargs)
    return [k for k, v in tr.items() if v["type"] == "sample" and not v["is_observed"]]


def make_ppl(case: Case, chains: int, warmup: int, draws: int):
    import ppl

    try:
        from inference.mcmc import NUTS
    except ImportError:
        from inference import NUTS

    names = latent_names(case)

    def run(seed: int):
        kernel = NUTS(dense_mass=case.dense_mass, target_accept=TARGET_ACCEPT)
        post = ppl.mcmc(
            case.model,
            kernel=kernel,
            chains=chains,
            warmup=warmup,
            draws=draws,
            seed=seed,
            progress_bar=False,
            log_likelihood=False,  # peers do not compute it either
            **case.kwargs,
        )
        samples = {k: np.asarray(post.samples[k]) for k in names}
        return samples, int(np.sum(np.asarray(post.stats["diverging"])))

    return run


def make_numpyro(case: Case, chains: int, warmup: int, draws: int):
    from numpyro.infer import MCMC, NUTS

    names = latent_names(case)
    mcmc = MCMC(
        NUTS(
            case.model,
            dense_mass=case.dense_mass,
            target_accept_prob=TARGET_ACCEPT,
            max_tree_depth=MAX_TREE_DEPTH,
        ),
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method="vectorized",
        progress_bar=False,
    )

    def run(seed: int):
        mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",), **case.kwargs)
        s = mcmc.get_samples(group_by_chain=True)
        samples = {k: np.asarray(s[k]) for k in names}
        div = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
        return samples, int(div.sum())

    return run


def make_blackjax(case: Case, chains: int, warmup: int, draws: int):
    import blackjax
    from numpyro.infer.util import initialize_model

    names = latent_names(case)
    state: dict[str, Any] = {}

    def build(seed: int):
        init_key = jax.random.split(jax.random.PRNGKey(seed), chains)
        info, potential_fn, postprocess_fn, _ = initialize_model(
            init_key, case.model, model_kwargs=case.kwargs, dynamic_args=False
        )

        def logdensity(x):
            return -potential_fn(x)

        def one_chain(key, position):
            warm_key, sample_key = jax.random.split(key)
            adapt = blackjax.window_adaptation(
                blackjax.nuts,
                logdensity,
                is_mass_matrix_diagonal=not case.dense_mass,
                target_acceptance_rate=TARGET_ACCEPT,
                max_num_doublings=MAX_TREE_DEPTH,
            )
            (st, params), _ = adapt.run(warm_key, position, num_steps=warmup)
            # params: step_size, inverse_mass_matrix and the extra max_num_doublings
            nuts = blackjax.nuts(logdensity, **params)

            def step(s, k):
                s, inf = nuts.step(k, s)
                return s, (postprocess_fn(s.position), inf.is_divergent)

            _, (xs, div) = jax.lax.scan(step, st, jax.random.split(sample_key, draws))
            return xs, div

        @jax.jit
        def sample(key, positions):
            keys = jax.random.split(key, chains)
            return jax.vmap(one_chain)(keys, positions)

        state["sample"] = sample
        state["init"] = info.z

    def run(seed: int):
        if "sample" not in state:
            build(seed)
        xs, div = state["sample"](jax.random.PRNGKey(seed), state["init"])
        samples = {k: np.asarray(xs[k]) for k in names}
        return samples, int(np.sum(np.asarray(div)))

    return run


RUNNERS = {"ppl": make_ppl, "numpyro": make_numpyro, "blackjax": make_blackjax}
LIBRARY_MODULES = {"ppl": "ppl", "numpyro": "numpyro.infer", "blackjax": "blackjax"}


def min_bulk_ess(samples: dict[str, np.ndarray]) -> float:
    import arviz as az

    flat = posteriordb.flatten_draws(samples)
    return float(min(float(az.ess(np.asarray(v, dtype=np.float64))) for v in flat.values()))


def first_call_seconds(lib: str, case: Case, chains: int, warmup: int, draws: int, seed: int):
    """Wall time of the first call in this process: setup + trace + compile + run."""
    t0 = time.perf_counter()
    run = RUNNERS[lib](case, chains, warmup, draws)
    run(seed)
    return time.perf_counter() - t0, run


def first_call_in_fresh_process(
    lib: str, name: str, chains: int, warmup: int, draws: int, seed: int
) -> float:
    """The first-call time measured in a new Python process, so that no library profits from
    what another compiled before it (eager numpyro ops, JAX's own first-use set-up)."""
    cmd = [
        sys.executable,
        __file__,
        "--first-only",
        f"{lib}:{name}",
        "--chains",
        str(chains),
        "--warmup",
        str(warmup),
        "--draws",
        str(draws),
        "--seed",
        str(seed),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def bench_one(
    lib: str, name: str, case: Case, chains: int, warmup: int, draws: int, seed: int, repeats: int
) -> dict:
    first = first_call_in_fresh_process(lib, name, chains, warmup, draws, seed)
    _, run = first_call_seconds(lib, case, chains, warmup, draws, seed)  # compile here too
    warm = math.inf
    for _ in range(repeats):  # same seed, same draws: the best time is the least disturbed one
        t0 = time.perf_counter()
        samples, n_div = run(seed)
        warm = min(warm, time.perf_counter() - t0)
    ess = min_bulk_ess(samples)
    return {"first": first, "warm": warm, "ess": ess, "ess_per_s": ess / warm, "div": n_div}


def gmean(xs: list[float]) -> float:
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 chains x 500 warm-up x 500 draws")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="warm calls; the best time counts")
    ap.add_argument("--only", default=None, help="comma-separated model names")
    ap.add_argument("--libs", default=",".join(LIBS), help="comma-separated subset of " + str(LIBS))
    ap.add_argument("--first-only", default=None, help=argparse.SUPPRESS)  # "lib:model"
    args = ap.parse_args(argv)
    if args.first_only:  # child process of first_call_in_fresh_process: print the seconds
        lib, name = args.first_only.split(":")
        importlib.import_module(LIBRARY_MODULES[lib])  # imports are not part of the first call
        jax.block_until_ready(jnp.zeros(()))  # the backend is up in every library's run alike
        seconds, _ = first_call_seconds(
            lib, cases()[name], args.chains, args.warmup, args.draws, args.seed
        )
        print(seconds)
        return 0
    n_default = 500 if args.quick else 1000
    warmup = args.warmup or n_default
    draws = args.draws or n_default
    libs = [x.strip() for x in args.libs.split(",") if x.strip()]
    for lib in libs:
        if lib not in RUNNERS:
            raise SystemExit(f"--libs: unknown library {lib!r}; expected some of {LIBS}")
    all_cases = cases()
    chosen = [x.strip() for x in args.only.split(",")] if args.only else list(all_cases)
    for c in chosen:
        if c not in all_cases:
            raise SystemExit(f"--only: unknown model {c!r}; expected some of {list(all_cases)}")

    import blackjax

    print(
        f"# NUTS: ppl vs numpyro {numpyro.__version__} vs BlackJAX {blackjax.__version__} "
        f"(jax {jax.__version__}, {jax.default_backend()}, {platform.processor() or 'cpu'})\n"
        f"{args.chains} chains (vectorised) x {warmup} warm-up x {draws} draws, seed {args.seed}, "
        f"target accept {TARGET_ACCEPT}, max tree depth {MAX_TREE_DEPTH}\n"
    )
    results: dict[str, dict[str, dict]] = {}
    for name in chosen:
        case = all_cases[name]
        results[name] = {}
        for lib in libs:
            try:
                r = bench_one(lib, name, case, args.chains, warmup, draws, args.seed, args.repeats)
                results[name][lib] = r
                print(
                    f"{name}/{lib}: first {r['first']:.1f} s, warm {r['warm']:.2f} s, "
                    f"min ESS {r['ess']:.0f}",
                    file=sys.stderr,
                )
            except Exception as exc:  # keep going; report the failure in the table
                results[name][lib] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{name}/{lib}: ERROR {type(exc).__name__}: {exc}", file=sys.stderr)
            sys.stderr.flush()

    peers = [lib for lib in libs if lib != "ppl"]
    first_vs_numpyro = "ppl" in libs and "numpyro" in libs
    header = "| model | metric | library | first (s) | warm (s) | min ESS | ESS/s (warm) | div |"
    align = "|---|---|---|---:|---:|---:|---:|---:|"
    if "ppl" in libs:
        header += "".join(f" ppl/{p} ESS/s |" for p in peers)
        align += "---:|" * len(peers)
    if first_vs_numpyro:
        header += " first ppl/numpyro |"
        align += "---:|"
    print(header)
    print(align)
    ratios: dict[str, list[float]] = {p: [] for p in peers}
    first_ratios: list[float] = []
    for name, per_lib in results.items():
        metric = "dense" if all_cases[name].dense_mass else "diag"
        for lib in libs:
            r = per_lib[lib]
            if "error" in r:
                print(f"| {name} | {metric} | {lib} | ERROR: {r['error'][:60]} |")
                continue
            line = (
                f"| {name} | {metric} | {lib} | {r['first']:.1f} | {r['warm']:.2f} | "
                f"{r['ess']:.0f} | {r['ess_per_s']:.0f} | {r['div']} |"
            )
            if "ppl" in libs:
                for p in peers:
                    if lib == "ppl" and "error" not in per_lib[p]:
                        ratio = r["ess_per_s"] / per_lib[p]["ess_per_s"]
                        ratios[p].append(ratio)
                        line += f" {ratio:.2f} |"
                    else:
                        line += " |"
            if first_vs_numpyro:
                if lib == "ppl" and "error" not in per_lib["numpyro"]:
                    ratio = r["first"] / per_lib["numpyro"]["first"]
                    first_ratios.append(ratio)
                    line += f" {ratio:.2f} |"
                else:
                    line += " |"
            print(line)
    print()
    print(
        "first = wall time of the first call = time to first draw (trace + compile + warm-up +"
        " sampling).\n"
        "warm  = best wall time of --repeats further identical calls; what they reuse:\n"
        "  ppl:      its cached compiled program (no compilation; warm-up + sampling only);\n"
        "  numpyro:  nothing - MCMC.run(chain_method='vectorized') recompiles on every call;\n"
        "  blackjax: its jax.jit-compiled run function (no compilation).\n"
        "ESS/s = min bulk ESS / warm time. first ppl/numpyro = ppl's first-call time / numpyro's."
    )
    if "ppl" in libs and peers:
        print()
        for p in peers:
            print(
                f"Geometric mean over models of ESS/s ratio ppl/{p}: {gmean(ratios[p]):.2f} "
                f"({len(ratios[p])} models)"
            )
        if first_vs_numpyro:
            print(
                "Geometric mean over models of time-to-first-draw ratio ppl/numpyro: "
                f"{gmean(first_ratios):.2f} ({len(first_ratios)} models)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
