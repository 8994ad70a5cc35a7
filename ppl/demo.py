"""The README's main job: eight schools (non-centred) with NUTS, summary and plots.

Run ``python -m ppl.demo`` or ``ppl demo``.
"""

from __future__ import annotations

import argparse

import numpy as np
import numpyro.distributions as dist

import ppl
from ppl import deterministic, plate, sample

# Rubin (1981): estimated coaching effects and their standard errors in eight schools.
EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    """Non-centred hierarchical model: theta_j = mu + tau * eta_j, y_j ~ N(theta_j, sigma_j)."""
    mu = sample("mu", dist.Normal(0.0, 5.0))
    tau = sample("tau", dist.HalfCauchy(5.0))
    with plate("school", len(sigma)):
        eta = sample("eta", dist.Normal(0.0, 1.0))
        theta = deterministic("theta", mu + tau * eta)
        sample("y", dist.Normal(theta, sigma), obs=y)


def main(argv=None) -> ppl.Posterior:
    parser = argparse.ArgumentParser(
        prog="ppl demo", description="Eight schools with NUTS: summary, trace plot, PPC."
    )
    parser.add_argument("--plot", default="eight_schools.png", help="trace plot file (PNG)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    post = ppl.mcmc(
        eight_schools,
        EIGHT_SCHOOLS_SIGMA,
        y=EIGHT_SCHOOLS_Y,
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        seed=args.seed,
        progress_bar=not args.no_progress,
    )
    print(post)
    print(post.summary(var_names=["mu", "tau", "theta"]).to_string())
    print(post.diagnose())
    ppc = ppl.predictive(eight_schools, EIGHT_SCHOOLS_SIGMA, posterior=post, y=None, seed=args.seed)
    inside = np.mean(
        (np.quantile(ppc["y"], 0.05, axis=(0, 1)) <= EIGHT_SCHOOLS_Y)
        & (EIGHT_SCHOOLS_Y <= np.quantile(ppc["y"], 0.95, axis=(0, 1)))
    )
    print(f"posterior predictive: {inside:.0%} of schools inside their 90% interval")
    if args.plot:
        post.plot(args.plot, var_names=["mu", "tau", "theta"])
        print(f"trace plot written to {args.plot}")
    return post


if __name__ == "__main__":
    main()
