"""Same seed -> bit-identical numbers, different seed -> different numbers, for the backends
whose own tests do not check it: every particle filter, PMMH, plain and composed diffusion
sampling, diffusion-time SMC on an inverse problem, and predictive draws.

Sizes are tiny: these are reproducibility checks, not accuracy checks. Each backend is called
twice with one seed (the second call reuses the compiled program, so the check also covers the
key being threaded through rather than baked into the compiled code) and once with another.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ppl
from inference.diffusion.sde import VPSDE
from models import gmm_targets as gt
from models.gmm import GaussianMixture
from models.state_space import LinearGaussian
from ppl.model import compile_model

LG = LinearGaussian(
    np.array([[0.9]]), np.eye(1), 0.5 * np.eye(1), 0.3 * np.eye(1), np.zeros(1), np.eye(1)
)
YS = np.asarray(LG.simulate(jax.random.key(0), 6)[1])
SDE = VPSDE()
G1 = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-0.5], [0.5]]), jnp.full(2, 0.25))
G2 = GaussianMixture(jnp.ones(1), jnp.array([[0.5]]), jnp.full(1, 0.25))


def _leaves(x):
    """Every array of a result, as numpy, in a fixed order."""
    if isinstance(x, dict):
        return [a for k in sorted(x) for a in _leaves(x[k])]
    if isinstance(x, tuple | list):
        return [a for v in x for a in _leaves(v)]
    return [np.asarray(x)]


def _check(run):
    a, b, c = _leaves(run(0)), _leaves(run(0)), _leaves(run(1))
    assert len(a) == len(b) == len(c) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)  # bit-identical, NaN-free by the next line
        assert np.all(np.isfinite(x))
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True)), "seed is ignored"


@pytest.mark.parametrize("method", ["bootstrap", "guided", "auxiliary"])
def test_particle_filter(method):
    kw = {}
    if method == "guided":
        kw["proposal"], kw["proposal0"] = LG.optimal_proposal()

    def run(seed):
        r = ppl.particle_filter(LG, YS, particles=16, method=method, seed=seed, **kw)
        return [r.log_likelihood, r.log_likelihood_running, r.filter_means, r.particles]

    _check(run)


def test_pmmh():
    def builder(p):
        return LinearGaussian(
            jnp.reshape(p["phi"], (1, 1)),
            jnp.eye(1),
            0.5 * jnp.eye(1),
            0.3 * jnp.eye(1),
            jnp.zeros(1),
            jnp.eye(1),
        )

    prior = {"phi": dist.Uniform(-1.0, 1.0)}

    def run(seed):
        post = ppl.pmmh(builder, prior, YS, draws=5, particles=8, chains=2, seed=seed)
        return [post.samples, post.stats]

    _check(run)


@pytest.fixture(scope="module")
def priors():
    return gt.exact_prior(G1, SDE), gt.exact_prior(G2, SDE)


def test_sample_diffusion_plain():
    prior = G1.diffusion_prior(SDE, steps=10)
    _check(lambda seed: ppl.sample_diffusion(prior, num_samples=8, steps=10, seed=seed).samples)


# FKC (anneal; product and geometric share its sampler) and SuperDiff (superpose)
@pytest.mark.parametrize("kind", ["anneal", "superpose"])
def test_sample_diffusion_composition(priors, kind):
    p1, p2 = priors
    target = {
        "anneal": lambda: ppl.anneal(p1, 2.0),
        "superpose": lambda: ppl.superpose(p1, p2, mode="or"),
    }[kind]()

    def run(seed):
        r = ppl.sample_diffusion(target, num_samples=16, steps=8, seed=seed)
        out = [r.samples]
        if r.log_normalizer is not None:
            out.append(r.log_normalizer)
        if r.kappa is not None:
            out.append(r.kappa)
        return out

    _check(run)


PRIOR_1D = G1.diffusion_prior(SDE, steps=10)


def _inverse_model(y):
    x = numpyro.sample("x", PRIOR_1D)
    numpyro.sample("y", dist.Normal(x.sum(-1, keepdims=True), 0.7), obs=y)


def test_smc_inverse_problem():
    y = jnp.array([0.3])

    def run(seed):
        post = ppl.smc(_inverse_model, y, particles=16, seed=seed, steps=8)
        return [post.samples, post.log_evidence]

    _check(run)


def _regression(x, y=None):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    with numpyro.plate("n", x.shape[0]):
        numpyro.sample("y", dist.Normal(a * x, s), obs=y)


def test_predictive_prior_and_posterior():
    x = jnp.linspace(-1.0, 1.0, 4)
    _check(lambda seed: ppl.predictive(_regression, x, num_samples=5, seed=seed))
    y = jnp.array([0.1, -0.3, 0.2, 0.5])
    post = ppl.Posterior(
        samples={"a": np.linspace(-1, 1, 6).reshape(2, 3), "s": np.full((2, 3), 0.5)},
        compiled=compile_model(_regression, (x, y)),
    )
    _check(lambda seed: ppl.predictive(_regression, x, posterior=post, seed=seed))
