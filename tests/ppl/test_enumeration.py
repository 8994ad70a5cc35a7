"""Discrete latent sites with a finite support are summed out, as numpyro's HMC does.

The log density is numpyro's enumerated ``potential_energy``; on a two-component model whose
posterior is one-dimensional in its continuous parameter, NUTS, the recovered assignments, the
marginal pointwise log-likelihood and tempered SMC's evidence match quadrature."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.control_flow import scan
from numpyro.contrib.funsor import config_enumerate, enum
from numpyro.infer.util import potential_energy
from numpyro.ops.indexing import Vindex
from scipy.special import logsumexp

import ppl
from ppl.diagnostics import rhat_and_ess
from ppl.model import compile_model

SHIFT = 3.0
Y = np.array([-0.4, 0.3, 3.6, 2.2, 1.1, 4.0, -1.2, 2.9])


def shifted_mixture(y):
    """theta ~ N(0, 2^2); z_i ~ Bernoulli(0.3); y_i ~ N(theta + SHIFT z_i, 1)."""
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    with numpyro.plate("n", len(y)):
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.deterministic("mean", theta + SHIFT * z)
        numpyro.sample("y", dist.Normal(theta + SHIFT * z, 1.0), obs=y)


def gaussian_mixture(y):
    """Weights, ordered-by-prior means and a scale: the usual numpyro mixture model."""
    w = numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))
    mu = numpyro.sample("mu", dist.Normal(jnp.array([-3.0, 0.0, 3.0]), 1.0).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("n", len(y)):
        z = numpyro.sample("z", dist.Categorical(w))
        numpyro.sample("y", dist.Normal(mu[z], sigma), obs=y)


def global_switch(y):
    """One discrete site outside every plate and a continuous site that depends on it."""
    k = numpyro.sample("k", dist.Categorical(jnp.array([0.2, 0.5, 0.3])))
    loc = numpyro.sample("loc", dist.Normal(jnp.array([-1.0, 0.0, 2.0])[k], 1.0))
    with numpyro.plate("n", len(y)):
        numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def hidden_markov(y):
    """A two-state hidden Markov model written with scan (numpyro's enumerated-HMM idiom)."""
    trans = numpyro.sample("trans", dist.Dirichlet(jnp.array([[8.0, 2.0], [2.0, 8.0]])).to_event(1))
    locs = numpyro.sample("locs", dist.Normal(jnp.array([-2.0, 2.0]), 1.0).to_event(1))

    def step(z_prev, y_t):
        z = numpyro.sample("z", dist.Categorical(Vindex(trans)[z_prev]))
        numpyro.sample("y", dist.Normal(Vindex(locs)[z], 1.0), obs=y_t)
        return z, None

    scan(step, 0, y)


def _quadrature(y):
    """Posterior of theta on a grid, and the exact evidence, for :func:`shifted_mixture`."""
    grid = np.linspace(-12.0, 12.0, 24001)
    log_prior = -0.5 * (grid / 2.0) ** 2 - np.log(2.0 * np.sqrt(2 * np.pi))
    log_terms = np.stack(
        [
            np.log(0.7) - 0.5 * (y[None] - grid[:, None]) ** 2,
            np.log(0.3) - 0.5 * (y[None] - grid[:, None] - SHIFT) ** 2,
        ]
    ) - 0.5 * np.log(2 * np.pi)
    pointwise = logsumexp(log_terms, axis=0)  # (grid, n): log p(y_i | theta)
    log_joint = log_prior + pointwise.sum(axis=1)
    log_evidence = logsumexp(log_joint) + np.log(grid[1] - grid[0])
    weight = np.exp(log_joint - logsumexp(log_joint))
    p_z = np.exp(log_terms[1] - pointwise)  # P(z_i = 1 | theta, y_i)
    return {
        "theta": float(weight @ grid),
        "z": weight @ p_z,
        "log_evidence": float(log_evidence),
    }


@pytest.mark.parametrize(
    "model, y",
    [(shifted_mixture, Y), (gaussian_mixture, Y), (global_switch, Y[:4]), (hidden_markov, Y)],
    ids=["bernoulli_in_plate", "categorical_mixture", "global_switch", "hmm_in_scan"],
)
def test_log_density_is_numpyros_enumerated_potential_energy(model, y):
    compiled = compile_model(model, (y,))
    assert compiled.enumerated
    enumerated = enum(config_enumerate(model), first_available_dim=-2)  # as numpyro's HMC
    flats = jax.random.uniform(jax.random.PRNGKey(0), (2, compiled.dim), minval=-2, maxval=2)

    @jax.jit
    @jax.vmap
    def evaluate(flat):
        expected = -potential_energy(enumerated, (y,), {}, compiled.unravel(flat), enum=True)
        return expected, compiled.logdensity(flat), sum(compiled.log_prior_and_likelihood(flat))

    expected, log_density, split_sum = evaluate(flats)
    np.testing.assert_allclose(log_density, expected, rtol=1e-5)
    np.testing.assert_allclose(split_sum, expected, rtol=1e-5)


def test_the_split_is_the_marginal_prior_and_likelihood():
    """global_switch: log p(loc) = log sum_k p(k) N(loc; m_k, 1); the rest is p(y | loc)."""
    compiled = compile_model(global_switch, (Y[:4],))
    loc = 0.7
    log_prior, log_lik = compiled.log_prior_and_likelihood(jnp.array([loc]))
    weights, means = np.array([0.2, 0.5, 0.3]), np.array([-1.0, 0.0, 2.0])
    expected_prior = logsumexp(np.log(weights) - 0.5 * (loc - means) ** 2) - 0.5 * np.log(2 * np.pi)
    expected_lik = np.sum(-0.5 * (Y[:4] - loc) ** 2 - 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(log_prior, expected_prior, rtol=1e-5)
    np.testing.assert_allclose(log_lik, expected_lik, rtol=1e-5)


NUTS_RUN = dict(chains=4, warmup=500, draws=1000, progress_bar=False)


@pytest.fixture(scope="module")
def nuts_on_shifted_mixture():
    return ppl.mcmc(shifted_mixture, Y, seed=1, **NUTS_RUN)


def test_nuts_and_recovered_assignments_match_quadrature(nuts_on_shifted_mixture):
    """E[theta | y] within 4 MCSE; P(z_i = 1 | y) from the draws of z (each drawn from
    p(z | theta, y) given that draw's theta) within 4 standard errors, per observation."""
    post = nuts_on_shifted_mixture
    exact = _quadrature(Y)
    theta = post.samples["theta"]
    _, ess_bulk, _ = rhat_and_ess(theta[..., None])
    se = theta.std() / np.sqrt(ess_bulk[0])
    assert abs(theta.mean() - exact["theta"]) < 4 * se, (theta.mean(), exact["theta"], se)

    z = post.samples["z"]
    assert z.shape == (4, 1000, len(Y))
    _, ess_z, _ = rhat_and_ess(z.reshape(4, 1000, -1).astype(float))
    p = z.mean(axis=(0, 1))
    se_z = np.sqrt(np.maximum(p * (1 - p), 1e-4) / ess_z)
    assert np.all(np.abs(p - exact["z"]) < 4 * se_z + 1e-3), (p, exact["z"])
    # deterministic sites see the drawn assignments
    np.testing.assert_allclose(post.samples["mean"], theta[..., None] + SHIFT * z, rtol=1e-6)


def test_pointwise_log_likelihood_is_the_marginal(nuts_on_shifted_mixture):
    """log p(y_i | theta) = log(0.7 N(y_i; theta, 1) + 0.3 N(y_i; theta + 3, 1)), z summed out
    (what LOO needs), not log p(y_i | z_i, theta) at a drawn z_i."""
    post = nuts_on_shifted_mixture
    theta = post.samples["theta"][..., None]
    expected = np.logaddexp(
        np.log(0.7) - 0.5 * (Y - theta) ** 2, np.log(0.3) - 0.5 * (Y - theta - SHIFT) ** 2
    ) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(post.log_likelihood["y"], expected, rtol=1e-5, atol=1e-5)


def test_pointwise_log_likelihood_under_a_scale_handler_is_unscaled():
    """numpyro's convention (its log_likelihood of a model without discrete sites): the scale
    handler weights the joint density, not log p(y_i | theta). It used to be
    log sum_z exp(s log p(z) + s log p(y_i | z)), neither the marginal nor s times it."""
    from numpyro import handlers

    compiled = compile_model(handlers.scale(shifted_mixture, scale=2.0), (Y,))
    theta = np.array([-0.5, 1.0])
    pointwise = compiled.pointwise_log_likelihood({"theta": jnp.asarray(theta)})["y"]
    theta = theta[:, None]
    expected = np.logaddexp(
        np.log(0.7) - 0.5 * (Y - theta) ** 2, np.log(0.3) - 0.5 * (Y - theta - SHIFT) ** 2
    ) - 0.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(pointwise, expected, rtol=1e-5, atol=1e-5)


def test_no_pointwise_log_likelihood_where_a_discrete_site_is_shared_by_observations():
    """A changepoint ``tau`` shared by every time step: the y_t are not independent given the
    rates, so sum_t log p(y_t | theta) is not log p(y | theta) (it was returned, 3 nats off on
    a 35-step series, and fed LOO / WAIC); left out with a warning. A site the observations
    do not depend on (``global_switch``'s ``k``, read through a continuous site) is no
    obstacle, nor is one local to each observation (the mixture)."""

    def changepoint(y):
        early = numpyro.sample("early", dist.Exponential(1.0))
        late = numpyro.sample("late", dist.Exponential(1.0))
        tau = numpyro.sample("tau", dist.Categorical(jnp.ones(len(y)) / len(y)))
        with numpyro.plate("t", len(y)):
            rate = jnp.where(jnp.arange(len(y)) < tau, early, late)
            numpyro.sample("y", dist.Poisson(rate), obs=y)

    counts = np.array([1, 0, 2, 5, 6, 4])
    compiled = compile_model(changepoint, (counts,))
    with pytest.warns(UserWarning, match=r"depend on the discrete site\(s\) \['tau'\]"):
        assert compiled.pointwise_log_likelihood({"early": jnp.ones(2), "late": jnp.ones(2)}) == {}
    switch = compile_model(global_switch, (Y,))
    assert switch.pointwise_log_likelihood({"loc": jnp.zeros(2)})["y"].shape == (2, len(Y))


def test_observations_that_do_not_depend_on_the_discrete_sites_keep_their_likelihood():
    """A site in another plate (``y2``, 5 elements next to the mixture's 8) crashed the export
    after sampling ("Incompatible shapes for broadcasting"), and a scalar one (``y0``) was left
    out with a warning naming ``z``: every discrete site was added to every observed one. Only
    the discrete sites an observation depends on are summed out now."""
    import warnings

    def mixture_and_more(y, y2):
        w = numpyro.sample("w", dist.Dirichlet(jnp.ones(2)))
        m = numpyro.sample("m", dist.Normal(0.0, 2.0))
        with numpyro.plate("n", len(y)):
            z = numpyro.sample("z", dist.Categorical(w))
            numpyro.sample("y", dist.Normal(jnp.array([-1.0, 2.0])[z], 1.0), obs=y)
        with numpyro.plate("k", len(y2)):
            numpyro.sample("y2", dist.Normal(m, 1.0), obs=y2)
        numpyro.sample("y0", dist.Normal(m, 1.0), obs=0.3)

    y2 = np.array([0.5, -0.1, 0.9, 1.4, 0.2])
    compiled = compile_model(mixture_and_more, (Y, y2))
    w, m = np.array([0.3, 0.7]), 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batch = {"w": jnp.asarray(w)[None], "m": jnp.asarray([m])}  # one draw
        pointwise = {k: v[0] for k, v in compiled.pointwise_log_likelihood(batch).items()}
    normal = lambda x, loc: -0.5 * (x - loc) ** 2 - 0.5 * np.log(2 * np.pi)  # noqa: E731
    expected_y = logsumexp([np.log(w[0]) + normal(Y, -1.0), np.log(w[1]) + normal(Y, 2.0)], axis=0)
    np.testing.assert_allclose(pointwise["y"], expected_y, rtol=1e-5)
    np.testing.assert_allclose(pointwise["y2"], normal(y2, m), rtol=1e-5)
    np.testing.assert_allclose(pointwise["y0"], normal(0.3, m), rtol=1e-5)


def test_same_seed_same_assignments(nuts_on_shifted_mixture):
    again = ppl.mcmc(shifted_mixture, Y, seed=1, **NUTS_RUN)  # the compiled program is reused
    other = ppl.mcmc(shifted_mixture, Y, seed=2, **NUTS_RUN)
    np.testing.assert_array_equal(nuts_on_shifted_mixture.samples["z"], again.samples["z"])
    first = nuts_on_shifted_mixture
    assert not np.array_equal(first.samples["z"], other.samples["z"])


def test_tempered_smc_evidence_with_the_discrete_sites_summed_out():
    """Tempering the marginal likelihood p(y | theta): the log-evidence is log p(y), by
    quadrature, within 4 standard errors over 8 runs."""
    exact = _quadrature(Y)
    post = ppl.smc(shifted_mixture, Y, particles=1000, runs=8, seed=0, progress_bar=False)
    log_z = np.asarray(post.stats["log_marginal_likelihood"])
    se = log_z.std(ddof=1) / np.sqrt(len(log_z))
    assert abs(log_z.mean() - exact["log_evidence"]) < 4 * se + 0.02, (log_z, exact)
    assert abs(post.samples["theta"].mean() - exact["theta"]) < 0.1


def unbounded_count(y):
    n = numpyro.sample("n", dist.Poisson(3.0))
    numpyro.sample("y", dist.Normal(n, 1.0), obs=y)


def only_discrete(y):
    z = numpyro.sample("z", dist.Bernoulli(0.5))
    numpyro.sample("y", dist.Normal(z, 1.0), obs=y)


def test_discrete_sites_that_cannot_be_summed_out_are_refused_by_name():
    with pytest.raises(ValueError, match="latent site 'n' has a discrete distribution"):
        ppl.mcmc(unbounded_count, 1.0, progress_bar=False)
    with pytest.raises(ValueError, match=r"no continuous latent.*\['z'\] are summed out"):
        ppl.mcmc(only_discrete, 1.0, progress_bar=False)


def test_a_chain_enumerated_in_scan_is_summed_out_but_not_drawn():
    """numpyro's infer_discrete does not support scan: the continuous draws are kept, the
    discrete sites left out, and no pointwise log-likelihood is made up, each with a warning."""
    compiled = compile_model(hidden_markov, (Y,))
    assert compiled.enumerated == ("z",) and compiled.enumerated_in_scan
    positions = np.zeros((1, 3, compiled.dim))
    with pytest.warns(UserWarning) as record:
        samples, pointwise = compiled.draws_from(positions)
    messages = " | ".join(str(w.message) for w in record)
    assert "['z'] are summed out of the density but not drawn" in messages, messages
    assert "no pointwise log-likelihood" in messages, messages
    assert set(samples) == {"trans", "locs"} and pointwise == {}
