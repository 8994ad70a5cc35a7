"""The Gaussian-mixture inverse-problem benchmark of MCGdiff (Cardoso et al. 2024, ICLR, Sec. 5.1).

Protocol (the paper's experiment script, as summarised in the team brief, Sec. 6.2):

* prior: 25 components, means ``mu_ij = (8i, 8j, 8i, 8j, ...)`` for ``i, j in {-2..2}``,
  identity covariances, weights ``∝ eps^2``, ``eps ~ N(0, 1)^25`` drawn once per ``(d, d_y)``
  cell and shared by its problems;
* ``A = U diag(s) V_{1:d_y}^T`` from the SVD of a standard normal ``(d_y, d)`` matrix, with the
  singular values replaced by sorted ``U(0, 1)`` draws; ``sigma_y = u max(s)``, ``u ~ U(0, 1)``;
  ``y = A x* + sigma_y e`` with ``x* ~ prior``;
* reference: ``N`` exact posterior draws (closed form, Matheron's rule; the paper: 2000);
* metric: sliced Wasserstein-1 over 100 random unit directions (mean of the 1-d ``W_1``,
  equal sample sizes), and the floor ``SW(exact, exact')``;
* exact noised score ``sum_k r_k(x) (a_t mu_k - x) / (a_t^2 + s_t^2)``.

Differences from the paper: the prior is the continuous VP SDE (beta in [0.1, 20]) on a uniform
grid of ``--steps`` steps instead of the paper's descending-beta DDPM array; DDPM kernels
(eta = 1); MCGdiff uses ``kappa = 1e-4`` (paper's script: 1e-2) and returns one resampled cloud
of ``N`` particles (paper: 2 clouds of 1000). DPS uses the paper's normalised step with
``zeta' = 0.1``. TDS uses the variance-inflated Gaussian twist. AFDPS (``--methods``; its default
rescaled potential with ``ppl.smc``'s likelihood scale) uses 4x the steps (its evidence has an
``O(du)`` bias; problems with non-finite output would be counted in ``failed`` and left out of
the mean). On the CPU at d = 8 it reaches SW 0.40 / 0.13 / 0.29 for d_y = 1 / 2 / 4, none failed
(``bench/results/afdps_gmm_d8_cpu.log``; the paper's noisy-state potential: 867 / 1.5e9 / 2.73).

Every ``(d, d_y, method)`` cell is compiled once (ahead of time) and vmapped over its problems
(``--batch`` problems at a time with ``lax.map``), so the timing is pure run time.

Usage::

    python bench/mcgdiff_gmm.py --quick               # CPU smoke run: d = 8, d_y in {1, 4},
                                                      # 4 problems, N = 500, 50 steps
    python bench/mcgdiff_gmm.py --full --out sw.json  # d in {8, 80, 800}, d_y in {1, 2, 4},
                                                      # 20 problems, N = 2000, 100 steps

``--full`` took 243 s on one H200 (jax 0.11.2), almost all of it compilation (~7 s per
cell and method; the 20 problems of a cell run in 0.02-0.25 s together).

Prints a markdown table (mean SW1 +- SE over problems, and seconds per problem) and, with
``--out``, writes every cell (per-problem SW included) as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from inference.diffusion.posterior.afdps import sample_afdps  # noqa: E402
from inference.diffusion.posterior.common import sliced_wasserstein_1  # noqa: E402
from inference.diffusion.posterior.dps import sample_dps  # noqa: E402
from inference.diffusion.posterior.mcgdiff import sample_mcgdiff  # noqa: E402
from inference.diffusion.posterior.tds import gaussian_twist, sample_tds  # noqa: E402
from inference.diffusion.sde import VPSDE  # noqa: E402

SDE = VPSDE()
ALL_METHODS = ("MCGdiff", "TDS", "DPS", "AFDPS")


def make_means(d: int) -> jnp.ndarray:
    ij = jnp.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], jnp.float32)
    return 8.0 * jnp.tile(ij, (1, d // 2))


def score_fn_factory(log_w, means):
    def score_fn(x, t):
        a, s = SDE.marginal_mean_coeff(t), SDE.marginal_std(t)
        v = a**2 + s**2
        diff = a * means[None] - x[:, None, :]  # (N, K, d)
        logits = log_w - 0.5 * jnp.sum(diff**2, -1) / v
        r = jax.nn.softmax(logits, -1)
        return jnp.einsum("nk,nkd->nd", r, diff) / v

    return score_fn


def make_problem(key, d, d_y, log_w, means):
    """One random inverse problem ``(A, y, sigma)`` of the paper's protocol (jit-able)."""
    k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
    U, _, Vt = jnp.linalg.svd(jax.random.normal(k1, (d_y, d)), full_matrices=False)
    s = -jnp.sort(-jax.random.uniform(k2, (d_y,)))
    A = U @ jnp.diag(s) @ Vt
    sigma = jax.random.uniform(k3) * s[0]
    comp = jax.random.categorical(k4, log_w)
    x_star = means[comp] + jax.random.normal(k5, (d,))
    y = A @ x_star + sigma * jax.random.normal(k6, (d_y,))
    return A, y, sigma


def exact_posterior_sample(key, n, A, y, sigma, log_w, means):
    """Identity covariances: ``w~_k ∝ w_k N(y; A mu_k, G)``, ``G = A A^T + sigma^2 I``;
    draws by Matheron's rule ``m_k + z - A^T G^{-1} (A z + sigma e)``."""
    d_y, d = A.shape
    G = A @ A.T + sigma**2 * jnp.eye(d_y)
    resid = y - means @ A.T
    sol = jnp.linalg.solve(G, resid.T).T
    logits = log_w - 0.5 * jnp.sum(resid * sol, -1)
    m = means + sol @ A
    k1, k2, k3 = jax.random.split(key, 3)
    comp = jax.random.categorical(k1, logits, shape=(n,))
    z = jax.random.normal(k2, (n, d))
    e = jax.random.normal(k3, (n, d_y))
    corr = jnp.linalg.solve(G, (z @ A.T + sigma * e).T).T @ A
    return m[comp] + z - corr


def sampler(method, score_fn, d, n, steps):
    """``f(key, A, y, sigma) -> (n, d)`` draws of one method."""

    def ll_of(A, y, s):
        def ll(x):  # normalised: AFDPS's exact start weight assumes it
            return jnp.sum(jax.scipy.stats.norm.logpdf(y, A @ x, s))

        return ll

    if method == "MCGdiff":

        def f(k, A, y, s):
            return sample_mcgdiff(k, score_fn, SDE, A, y, s, n, steps).particles

    elif method == "TDS":

        def f(k, A, y, s):
            tw = gaussian_twist(SDE, A, y, s)
            res = sample_tds(k, score_fn, SDE, ll_of(A, y, s), d, n, steps, log_twist_fn=tw)
            return res.particles["x"]

    elif method == "DPS":

        def f(k, A, y, s):
            return sample_dps(
                k,
                score_fn,
                SDE,
                ll_of(A, y, s),
                d,
                n,
                steps,
                scale=0.1,
                residual_fn=lambda x0: y - A @ x0,
            ).particles

    elif method == "AFDPS":

        def f(k, A, y, s):
            lap = -jnp.sum(A**2) / s**2
            res = sample_afdps(
                k,
                score_fn,
                SDE,
                ll_of(A, y, s),
                d,
                n,
                4 * steps,
                laplacian_fn=lambda x: lap,
                gaussian=(A, y, s),
                likelihood_scale=0.5 * s / jnp.linalg.norm(A, 2),  # as ppl.smc
            )
            return res.particles["x"]

    else:
        raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS}")
    return f


def run_cell(d, d_y, problems, n, steps, seed, methods, batch):
    """All methods on the ``problems`` random problems of one ``(d, d_y)`` cell."""
    key = jax.random.PRNGKey(seed)
    kw, kp, kr, ks = jax.random.split(key, 4)
    w = jax.random.normal(kw, (25,)) ** 2
    log_w = jnp.log(w / w.sum())
    means = make_means(d)
    score_fn = score_fn_factory(log_w, means)
    pkeys = jax.random.split(kp, problems)
    A, y, sigma = jax.jit(jax.vmap(lambda k: make_problem(k, d, d_y, log_w, means)))(pkeys)

    def ref_and_floor(k, A, y, s):
        k1, k2, k3 = jax.random.split(k, 3)
        r1 = exact_posterior_sample(k1, n, A, y, s, log_w, means)
        r2 = exact_posterior_sample(k2, n, A, y, s, log_w, means)
        return r1, sliced_wasserstein_1(k3, r2, r1, 100)

    refs, floor = jax.jit(jax.vmap(ref_and_floor))(jax.random.split(kr, problems), A, y, sigma)
    out = {"floor": {"sw": np.asarray(floor, np.float64).tolist()}}
    skeys = jax.random.split(ks, problems)
    for method in methods:
        f = sampler(method, score_fn, d, n, steps)

        def solve(args, f=f):
            k, A_, y_, s_, ref = args
            x = f(k, A_, y_, s_)
            ok = jnp.all(jnp.isfinite(x))
            sw = sliced_wasserstein_1(jax.random.fold_in(k, 7), jnp.nan_to_num(x), ref, 100)
            return jnp.where(ok, sw, jnp.nan)

        def batched(*args):
            if batch >= problems:
                return jax.vmap(lambda *a: solve(a))(*args)
            return jax.lax.map(solve, args, batch_size=batch)

        t0 = time.perf_counter()
        compiled = jax.jit(batched).lower(skeys, A, y, sigma, refs).compile()
        t_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        sw = np.asarray(jax.block_until_ready(compiled(skeys, A, y, sigma, refs)), np.float64)
        dt = (time.perf_counter() - t0) / problems
        out[method] = {"sw": sw.tolist(), "seconds_per_problem": dt, "compile_s": t_compile}
        ok = np.isfinite(sw)
        print(
            f"  d={d} d_y={d_y} {method}: SW {np.mean(sw[ok]) if ok.any() else np.nan:.2f} "
            f"({(~ok).sum()} failed), {dt:.3f} s/problem, compile {t_compile:.1f} s",
            flush=True,
        )
    return out


def stats(sw):
    sw = np.asarray(sw, np.float64)
    ok = np.isfinite(sw)
    m = int(ok.sum())
    if m == 0:
        return np.nan, np.nan, int(sw.size)
    se = sw[ok].std(ddof=1) / np.sqrt(m) if m > 1 else np.nan
    return float(sw[ok].mean()), float(se), int(sw.size - m)


def table(rows, methods, problems, n, steps):
    lines = [
        f"SW1 (100 directions) vs {n} exact posterior draws: mean ± SE over {problems} problems "
        f"(failed runs excluded, count in brackets); N = {n}, {steps} VP steps; "
        f"t = seconds per problem after compilation; device {jax.devices()[0].platform}",
        "",
        "| d | d_y | floor | "
        + " | ".join(methods)
        + " | "
        + " | ".join(f"t {m}" for m in methods)
        + " |",
        "|---" * (3 + 2 * len(methods)) + "|",
    ]
    for d, d_y, res in rows:
        fm, fse, _ = stats(res["floor"]["sw"])
        cells, times = [], []
        for m in methods:
            mean, se, bad = stats(res[m]["sw"])
            cells.append(f"{mean:.2f} ± {se:.2f}" + (f" [{bad}]" if bad else ""))
            times.append(f"{res[m]['seconds_per_problem']:.4f}")
        lines.append(
            f"| {d} | {d_y} | {fm:.2f} | " + " | ".join(cells) + " | " + " | ".join(times) + " |"
        )
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU smoke run: d = 8, 4 problems")
    mode.add_argument("--full", action="store_true", help="the paper's grid, 20 problems")
    ap.add_argument("--dims", type=int, nargs="+", default=None)
    ap.add_argument("--dys", type=int, nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--problems", type=int, default=None)
    ap.add_argument("--particles", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None, help="problems vmapped at once")
    ap.add_argument(
        "--methods", nargs="+", default=["MCGdiff", "TDS", "DPS"], choices=list(ALL_METHODS)
    )
    ap.add_argument("--out", type=str, default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__}, devices {jax.devices()}", flush=True)
    dys = (1, 2, 4)
    if args.quick:
        dims, problems, n, steps, batch = (8,), 4, 500, 50, 4
        dys = (1, 4)
    elif args.full:
        dims, problems, n, steps, batch = (8, 80, 800), 20, 2000, 100, 20
    else:
        dims, problems, n, steps, batch = (8,), 10, 1000, 100, 10
    dims = tuple(args.dims or dims)
    dys = tuple(args.dys or dys)
    problems = args.problems or problems
    n = args.particles or n
    steps = args.steps or steps
    batch = min(args.batch or batch, problems)
    methods = list(args.methods)
    rows = []
    t_all = time.perf_counter()
    for i_d, d in enumerate(dims):
        for i_y, d_y in enumerate(dys):
            seed = 2**i_d * 3**i_y
            res = run_cell(d, d_y, problems, n, steps, seed, methods, batch)
            rows.append((d, d_y, res))
            print(f"# done d={d} d_y={d_y} ({time.perf_counter() - t_all:.0f} s)", flush=True)
    text = table(rows, methods, problems, n, steps)
    print("\n" + text, flush=True)
    if args.out:
        payload = {
            "config": {
                "dims": dims,
                "dys": dys,
                "problems": problems,
                "particles": n,
                "steps": steps,
                "methods": methods,
                "device": str(jax.devices()[0]),
                "total_seconds": time.perf_counter() - t_all,
            },
            "cells": [
                {
                    "d": d,
                    "d_y": d_y,
                    **{
                        m: {
                            **res[m],
                            "mean": stats(res[m]["sw"])[0],
                            "se": stats(res[m]["sw"])[1],
                            "failed": stats(res[m]["sw"])[2],
                        }
                        for m in ["floor", *methods]
                    },
                }
                for d, d_y, res in rows
            ],
            "table": text,
        }
        Path(args.out).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
