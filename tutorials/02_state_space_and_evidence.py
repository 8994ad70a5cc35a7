"""Tutorial 2: a state-space model with particle filters, and model comparison by evidence.

Part 1 filters a simulated linear-Gaussian state-space model (whose exact likelihood the
Kalman filter gives), smooths it by backward sampling, and learns a parameter by particle
marginal Metropolis-Hastings. Part 2 compares two regression models by their log evidence,
estimated by tempered SMC. ``PPL_QUICK=1`` shortens everything (the test suite sets it).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import ppl
from models.state_space import LinearGaussian
from ppl import plate, sample

QUICK = os.environ.get("PPL_QUICK") == "1"

# -- Part 1: a linear-Gaussian state-space model ------------------------------------------------
# x_t = 0.9 x_{t-1} + N(0, 0.5^2),  y_t = x_t + N(0, 0.7^2)
truth = LinearGaussian(A=[[0.9]], C=[[1.0]], Q=[[0.25]], R=[[0.49]], m0=[0.0], P0=[[1.0]])
xs, ys = truth.simulate(jax.random.PRNGKey(0), 100)
exact = float(truth.kalman_filter(ys).log_likelihood)

pf = ppl.particle_filter(truth, ys, particles=1000, method="bootstrap", seed=0)
print(f"log-likelihood: bootstrap filter {pf.log_likelihood:.2f}, Kalman (exact) {exact:.2f}")
kalman_means = np.asarray(truth.kalman_filter(ys).means)[:, 0]
print(
    f"max |filter mean - Kalman mean| = {np.max(np.abs(pf.filter_means[:, 0] - kalman_means)):.3f}"
)

paths = pf.smooth(num_trajectories=200, seed=1)  # FFBS trajectories, (200, T, 1)
print(f"smoothed path mean at t=50: {paths[:, 50, 0].mean():.2f} (true state {xs[50, 0]:.2f})")


# A state-space model can also be written with numpyro distributions:
def build(params):
    phi = params["phi"]
    return ppl.StateSpaceModel(
        init=lambda: dist.Normal(jnp.zeros(1), 1.0).to_event(1),
        transition=lambda x, t: dist.Normal(phi * x, 0.5).to_event(1),
        observation=lambda x, t: dist.Normal(x, 0.7).to_event(1),
    )


post = ppl.pmmh(
    build,
    {"phi": dist.Uniform(-1.0, 1.0)},
    ys,
    draws=150 if QUICK else 2000,
    warmup=50 if QUICK else 500,
    particles=100,
    step_size=0.2,
    chains=2 if QUICK else 4,
    seed=0,
)
print(f"PMMH: phi = {post.samples['phi'].mean():.3f} +- {post.samples['phi'].std():.3f} (true 0.9)")

# -- Part 2: which regression explains the data, linear or quadratic? ----------------------------
rng = np.random.default_rng(2)
x = np.linspace(-2, 2, 40)
y = 0.5 + 1.0 * x + 0.8 * x**2 + rng.normal(0, 0.5, size=x.size)


def linear(x, y=None):
    a = sample("a", dist.Normal(0, 3))
    b = sample("b", dist.Normal(0, 3))
    with plate("data", x.size):
        sample("y", dist.Normal(a + b * x, 0.5), obs=y)


def quadratic(x, y=None):
    a = sample("a", dist.Normal(0, 3))
    b = sample("b", dist.Normal(0, 3))
    c = sample("c", dist.Normal(0, 3))
    with plate("data", x.size):
        sample("y", dist.Normal(a + b * x + c * x**2, 0.5), obs=y)


particles = 500 if QUICK else 4000
evidence = {
    m.__name__: ppl.smc(m, x, y=y, particles=particles, runs=2, seed=0).log_evidence
    for m in (linear, quadratic)
}
print(f"log evidence: {evidence}")
log_bayes_factor = evidence["quadratic"] - evidence["linear"]
print(f"log Bayes factor quadratic vs linear: {log_bayes_factor:.1f}")
assert log_bayes_factor > 5, "the quadratic model generated the data"
