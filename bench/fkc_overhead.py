"""Wall-time overhead of FKC sampling over the plain reverse SDE (same scores, particles, steps).

Both are jitted once and timed warm (best of ``--repeats``) in one process. FKC runs the
annealed target ``q^beta`` through the SMC engine (weights from the drift's own score
evaluations, ESS-triggered systematic resampling); the baseline is
:func:`inference.diffusion.samplers.euler_maruyama` with the score scaled by ``beta`` (the same
number of score evaluations). Target ratio: <= 1.2. A third row runs FKC with
``ess_threshold=0``: the weights and the engine's bookkeeping (normalisation, ESS, the
resampling ``lax.cond``) without any resampling, to separate their cost from that of resampling.
A fourth row decides on resampling only every ``--resample-every`` steps (one ``lax.cond`` and
one batched normalisation per block of steps, :func:`inference.smc.engine.advance`).

    python bench/fkc_overhead.py [--particles 10000] [--steps 500] [--repeats 3] [--score neural]
                                 [--resample-every 10]
"""

from __future__ import annotations

import argparse
import re
import time

import jax
import jax.numpy as jnp

from inference.diffusion import fkc
from inference.diffusion.samplers import euler_maruyama, time_grid
from inference.diffusion.sde import VPSDE
from models.gmm import GaussianMixture
from models.score_mlp import load_toy2d, toy_path


def wall_time(fn, key):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(key))
    return time.perf_counter() - t0


def loop_kernel_counts(fn):
    """Kernel-launching instructions (fusions, library calls, copies) in each loop body of
    ``fn``'s optimised HLO, largest first: the per-iteration launch count that dominates
    small-particle runs on a GPU."""
    text = fn.lower(jax.random.PRNGKey(0)).compile().as_text()
    bodies = set(re.findall(r"body=%?([\w.\-]+)", text))
    counts, current = {}, None
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current = header.group(1)
            continue
        op = re.search(r"= \S+ (fusion|custom-call|copy|conditional|while|sort)\(", line)
        if current in bodies and op:
            counts[current] = counts.get(current, 0) + 1
    return sorted(counts.values(), reverse=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--particles", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--beta", type=float, default=3.0)
    ap.add_argument(
        "--score",
        choices=("exact", "neural"),
        default="exact",
        help="the exact four-mode GMM score, or the shipped neural four-mode toy model (MLP)",
    )
    ap.add_argument(
        "--resample-every",
        type=int,
        default=10,
        help="steps per resampling decision in the fourth row",
    )
    ap.add_argument(
        "--kernels",
        action="store_true",
        help="also print the kernel-launching instructions per loop body of each variant",
    )
    args = ap.parse_args(argv)
    if args.score == "neural":
        score, sde = load_toy2d(toy_path("four_modes"))
    else:
        sde = VPSDE()
        means = jnp.array([[1.5, 1.5], [-1.5, 1.5], [1.5, -1.5], [-1.5, -1.5]])
        gmm = GaussianMixture(jnp.ones(4) / 4, means, jnp.full((4,), 0.16))
        score = gmm.score_fn(sde)
    beta, n, steps = args.beta, args.particles, args.steps
    grid = time_grid(sde, steps)

    every = args.resample_every

    def plain_sde(unroll=1):
        @jax.jit
        def run(key):
            k0, k1 = jax.random.split(key)
            x_T = sde.prior_sample(k0, (n, 2)) / jnp.sqrt(beta)
            scaled = lambda x, t: beta * score(x, t)  # noqa: E731
            return euler_maruyama(k1, scaled, sde, x_T, grid, unroll=unroll)

        return run

    def fkc_sampler(**options):
        return jax.jit(
            lambda key: fkc.fkc_sample(key, [score], [beta], sde, 2, n, steps, **options).samples
        )

    # interleave them so that load from other processes hits them alike; keep the best
    fns = {
        "plain": plain_sde(),
        "fkc": fkc_sampler(),
        "weights_only": fkc_sampler(ess_threshold=0.0),
        "blocked": fkc_sampler(resample_every=every),
        "plain_unrolled": plain_sde(unroll=every),
        "blocked_unrolled": fkc_sampler(resample_every=every, unroll=True),
    }
    if args.kernels:
        for name, f in fns.items():
            print(f"kernels per loop body, {name}: {loop_kernel_counts(f)}")
    for f in fns.values():
        jax.block_until_ready(f(jax.random.PRNGKey(0)))
    best = dict.fromkeys(fns, float("inf"))
    for i in range(args.repeats):
        for name, f in fns.items():
            best[name] = min(best[name], wall_time(f, jax.random.PRNGKey(i)))
    rows = {
        "plain": "reverse SDE (Euler-Maruyama, scaled score)",
        "fkc": "FKC (engine, ESS<0.5 systematic)",
        "weights_only": "FKC, never resampling (ess_threshold=0)",
        "blocked": f"FKC, deciding every {every} steps (resample_every={every})",
        "plain_unrolled": f"reverse SDE, loop unrolled {every}x (unroll={every})",
        "blocked_unrolled": f"FKC, resample_every={every}, blocks unrolled (unroll=True)",
    }
    print(
        f"device: {jax.devices()[0].platform}, score {args.score}, particles {n}, steps {steps}, "
        f"beta {beta}"
    )
    print("| sampler | wall time (ms) | / plain | / plain unrolled |")
    print("|---|---:|---:|---:|")
    for name, label in rows.items():
        t = best[name]
        ratios = f"{t / best['plain']:.2f} | {t / best['plain_unrolled']:.2f}"
        print(f"| {label} | {1e3 * t:.2f} | {ratios} |")
    print(
        f"target: FKC / plain <= 1.2. FKC (every step) {best['fkc'] / best['plain']:.2f}; "
        f"resample_every={every}: {best['blocked'] / best['plain']:.2f}; with unroll=True, "
        f"against the plain SDE unrolled alike: "
        f"{best['blocked_unrolled'] / best['plain_unrolled']:.2f}"
    )
    t_fkc, t_plain = best["fkc"], best["plain"]
    return t_fkc / t_plain


if __name__ == "__main__":
    main()
