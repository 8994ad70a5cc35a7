"""Tutorial 1: a model, NUTS, diagnostics, and a posterior predictive check.

A Bayesian logistic regression on simulated data. Run it with ``python
tutorials/01_regression_nuts.py``; set ``PPL_QUICK=1`` for a short run (the test suite does).
"""

import os

import arviz as az
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import ppl
from ppl import plate, sample

QUICK = os.environ.get("PPL_QUICK") == "1"

# 1. Data: 200 rows, 3 predictors, known coefficients.
rng = np.random.default_rng(1)
X = rng.normal(size=(200, 3))
true_beta = np.array([1.5, -1.0, 0.0])
true_alpha = -0.5
y = rng.binomial(1, 1 / (1 + np.exp(-(true_alpha + X @ true_beta))))


# 2. The model: a plain Python function of numpyro primitives.
def logistic_regression(X, y=None):
    alpha = sample("alpha", dist.Normal(0.0, 2.5))
    beta = sample("beta", dist.Normal(0.0, 2.5).expand([X.shape[1]]).to_event(1))
    with plate("rows", X.shape[0]):
        sample("y", dist.Bernoulli(logits=alpha + jnp.asarray(X) @ beta), obs=y)


# 3. NUTS, four chains at once.
steps = 300 if QUICK else 1000
post = ppl.mcmc(
    logistic_regression, X, y=y, chains=4, warmup=steps, draws=steps, seed=0, progress_bar=not QUICK
)

# 4. Diagnostics: R-hat, ESS, divergences, energy (BFMI).
summary = post.summary()  # ArviZ's table (its columns differ between ArviZ 0.2x and 1.x)
print(summary)
# The checks Stan and PyMC run after sampling (ppl.mcmc warns when one fails): divergences,
# tree depth, E-BFMI per chain, rank-normalised R-hat, bulk and tail ESS.
diagnosis = post.diagnose()
print(diagnosis)
print("E-BFMI per chain:", np.round(diagnosis.e_bfmi, 2))
assert diagnosis.max_rhat[0] < 1.05

# The true coefficients sit inside the central 94% posterior intervals.
draws = np.concatenate(
    [post.samples["alpha"].reshape(-1, 1), post.samples["beta"].reshape(-1, X.shape[1])], axis=1
)
lower, upper = np.quantile(draws, [0.03, 0.97], axis=0)
truth = np.concatenate([[true_alpha], true_beta])
print("truth inside the 94% interval:", ((lower <= truth) & (truth <= upper)).tolist())

# 5. Posterior predictive check: simulate y for each draw, compare the success rate.
ppc = ppl.predictive(logistic_regression, X, posterior=post, y=None, seed=1)
rates = ppc["y"].mean(axis=-1)
p_value = float(np.mean(rates >= y.mean()))
print(f"observed rate {y.mean():.3f}; predictive rate {rates.mean():.3f}; p = {p_value:.2f}")

# 6. Model criticism with PSIS-LOO (pointwise log-likelihoods are exported by default).
print(az.loo(post.to_arviz()))
