"""Wall time per reverse-SDE step against the score evaluation alone.

For the exact Gaussian-mixture score (8 components, 2-d) and the shipped MLP score model, at
10^3, 10^4 and 10^5 particles: the Euler-Maruyama sampler (``inference.diffusion.samplers``,
one jitted scan of ``STEPS`` steps) against a jitted scan of ``STEPS`` score evaluations on
the same particles. The ratio is the sampler's overhead over its score calls.

Run: ``python bench/diffusion_steps.py [--sizes 1000,10000,100000]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from inference.diffusion import samplers
from models import score_mlp

STEPS = 50


def warm_seconds(fn, *args) -> float:
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    mlp_score, sde = score_mlp.load_toy2d()
    scores = {"exact GMM": score_mlp.toy2d_gmm().score_fn(sde), "MLP 128x3": mlp_score}
    grid = samplers.time_grid(sde, STEPS)
    print(f"jax {jax.__version__}, device {jax.devices()[0]}, {STEPS} steps")
    print("| score | particles | step (ms) | score alone (ms) | ratio |")
    print("|---|---|---|---|---|")
    for name, score_fn in scores.items():
        for n in (int(s) for s in args.sizes.split(",")):
            x_T = sde.prior_sample(jax.random.PRNGKey(0), (n, 2))

            @jax.jit
            def sample(key, x_T, score_fn=score_fn):
                return samplers.euler_maruyama(key, score_fn, sde, x_T, grid)

            @jax.jit
            def scores_only(x, score_fn=score_fn):
                def body(acc, t):
                    return acc + score_fn(x, t), None

                return jax.lax.scan(body, jnp.zeros_like(x), grid[:-1])[0]

            step = warm_seconds(sample, jax.random.PRNGKey(1), x_T) / STEPS * 1e3
            alone = warm_seconds(scores_only, x_T) / STEPS * 1e3
            print(f"| {name} | {n} | {step:.3f} | {alone:.3f} | {step / alone:.2f} |")


if __name__ == "__main__":
    main()
