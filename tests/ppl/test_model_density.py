"""The compiled log density is numpyro's, to rounding, on models whose unconstrained density
is easy to get wrong: supports that depend on other latent values, ``handlers.scale``, latent
sites inside ``scan``, plates with constrained sites; and NUTS on a latent-bounded support
matches the posterior computed by quadrature."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.contrib.control_flow import scan
from numpyro.infer.util import potential_energy

import ppl
from ppl.model import compile_model


def latent_bounds(y):
    """``x`` is uniform on an interval that moves with the latent ``a``."""
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    x = numpyro.sample("x", dist.Uniform(a, a + 2.0))
    numpyro.sample("y", dist.Normal(x, 1.0), obs=y)


def truncated_at_latent(y):
    upper = numpyro.sample("upper", dist.LogNormal(0.0, 0.5))
    with numpyro.plate("n", 3):
        z = numpyro.sample("z", dist.TruncatedNormal(0.0, 1.0, high=upper))
    numpyro.sample("y", dist.Normal(z.sum(), 1.0), obs=y)


def scaled(y):
    m = numpyro.sample("m", dist.Normal(0.0, 10.0))
    s = numpyro.sample("s", dist.HalfNormal(2.0))
    with numpyro.plate("n", len(y)):
        numpyro.sample("y", dist.Normal(m, s), obs=y)


def scan_positive(y):
    def step(carry, yt):
        s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(carry, s), obs=yt)
        return carry + 0.1, None

    scan(step, 0.0, y)


def plated_simplex_and_cholesky(y):
    with numpyro.plate("groups", 2):
        p = numpyro.sample("p", dist.Dirichlet(jnp.ones(3)))
    chol = numpyro.sample("chol", dist.LKJCholesky(3, 2.0))
    numpyro.sample("y", dist.MultivariateNormal(p[0], scale_tril=chol), obs=y)


Y_VEC = np.array([0.3, 1.2, -0.4, 0.8])
CASES = [
    (latent_bounds, (0.5,)),
    (truncated_at_latent, (0.7,)),
    (handlers.scale(scaled, scale=10.0), (Y_VEC,)),
    (scan_positive, (Y_VEC,)),
    (plated_simplex_and_cholesky, (np.array([0.2, 0.5, 0.1]),)),
]


@pytest.mark.parametrize("model, args", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_log_density_is_numpyros_potential_energy(model, args):
    """At random unconstrained points: log density = -potential_energy, with the Jacobian of
    every site computed from its support in that run (latent bounds), scaled with the site
    (numpyro scales the Jacobian factor too) and taken per step inside scan."""
    compiled = compile_model(model, args)
    flats = jax.random.uniform(jax.random.PRNGKey(0), (5, compiled.dim), minval=-2, maxval=2)

    @jax.jit
    @jax.vmap
    def evaluate(flat):
        expected = -potential_energy(model, args, {}, compiled.unravel(flat))
        log_prior, log_lik = compiled.log_prior_and_likelihood(flat)
        round_trip = compiled.to_unconstrained(compiled.to_constrained(flat))
        return expected, compiled.logdensity(flat), log_prior + log_lik, round_trip

    expected, log_density, split_sum, round_trip = evaluate(flats)
    np.testing.assert_allclose(log_density, expected, rtol=1e-5, atol=1e-5)
    # the prior / likelihood split used by tempering adds up to the same
    np.testing.assert_allclose(split_sum, expected, rtol=1e-5, atol=1e-5)
    # the maps between the spaces are inverse to each other
    np.testing.assert_allclose(round_trip, flats, atol=1e-4)


def test_a_sample_site_hidden_by_block_does_not_break_the_pointwise_log_likelihood():
    """``handlers.block`` hides a draw from the trace: numpyro's MCMC runs such a model; the
    pointwise log-likelihood (ArviZ's log_likelihood group) used to fail with a bare
    AssertionError after sampling, for want of a PRNG key."""

    def blocked(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
        with handlers.block():
            numpyro.sample("nuisance", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", len(y)):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    compiled = compile_model(blocked, (Y_VEC,))
    assert list(compiled.latents) == ["mu"]
    mu = jnp.array([0.0, 1.5])
    pointwise = compiled.pointwise_log_likelihood({"mu": mu})["y"]
    expected = dist.Normal(mu[:, None], 1.0).log_prob(Y_VEC)
    np.testing.assert_allclose(pointwise, expected, rtol=1e-6)


def test_the_jacobian_of_a_latent_bounded_site_is_in_the_prior_part():
    compiled = compile_model(latent_bounds, (0.5,))
    flat = jnp.array([0.3, -0.7])
    log_prior, log_lik = compiled.log_prior_and_likelihood(flat)
    a = 0.3
    x = a + 2.0 * jax.nn.sigmoid(-0.7)
    jac = jnp.log(2.0) + jax.nn.log_sigmoid(-0.7) + jax.nn.log_sigmoid(0.7)
    expected_prior = dist.Normal(0, 1).log_prob(a) + jnp.log(0.5) + jac
    np.testing.assert_allclose(log_prior, expected_prior, rtol=1e-6)
    np.testing.assert_allclose(log_lik, dist.Normal(x, 1.0).log_prob(0.5), rtol=1e-6)


def test_nuts_on_a_latent_bounded_support_matches_quadrature():
    """a ~ N(0, 1), x | a ~ U(a, a + 2), y = 0.5 ~ N(x, 1): posterior means of a and x by
    quadrature on a fine grid; NUTS within 4 MCSE (ESS-based). Fixing the interval at its
    value when the model was traced (the old behaviour) put x's mean 13 MCSE off."""
    a_grid = np.linspace(-6, 6, 1201)
    x_grid = np.linspace(-6, 8, 1401)
    A, X = np.meshgrid(a_grid, x_grid, indexing="ij")
    inside = (X > A) & (X < A + 2.0)
    log_post = -0.5 * A**2 - 0.5 * (0.5 - X) ** 2
    weight = np.where(inside, np.exp(log_post - log_post[inside].max()), 0.0)
    weight /= weight.sum()
    exact = {"a": float((weight * A).sum()), "x": float((weight * X).sum())}

    post = ppl.mcmc(
        latent_bounds, 0.5, chains=4, warmup=500, draws=1000, seed=0, progress_bar=False
    )
    assert int(post.stats["diverging"].sum()) == 0
    for name, mean in exact.items():
        draws = post.samples[name]
        se = draws.std() / np.sqrt(float(az.ess(draws)))
        assert abs(draws.mean() - mean) < 4 * se, (name, draws.mean(), mean, se)


def uniform_between_latents(y):
    lo = numpyro.sample("lo", dist.Uniform(-1.0, jnp.min(y)))
    hi = numpyro.sample("hi", dist.Uniform(jnp.max(y), 5.0))
    with numpyro.plate("n", len(y)):
        numpyro.sample("y", dist.Uniform(lo, hi), obs=y)


def test_numpy_observations_against_latent_bounds_compile():
    """numpyro's support check compares the observed NumPy array with traced bounds, which
    fails under jit (TracerArrayConversionError, numpyro alone included): the compiled model
    hands observations to numpyro as JAX arrays, and its density is that of the same data given
    as a JAX array."""
    y = np.random.default_rng(2).uniform(0.3, 1.7, size=40)
    compiled = compile_model(uniform_between_latents, (y,))
    flats = jax.random.uniform(jax.random.PRNGKey(1), (4, compiled.dim), minval=-2, maxval=2)
    log_density = jax.jit(jax.vmap(compiled.logdensity))(flats)
    expected = jax.vmap(
        lambda f: (
            -potential_energy(uniform_between_latents, (jnp.asarray(y),), {}, compiled.unravel(f))
        )
    )(flats)
    np.testing.assert_allclose(log_density, expected, rtol=1e-5)
    pointwise = jax.jit(compiled.pointwise_log_likelihood)(jax.vmap(compiled.to_constrained)(flats))
    assert pointwise["y"].shape == (4, 40) and np.all(np.isfinite(pointwise["y"]))


def one_uniform_between_latents(y):
    lo = numpyro.sample("lo", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Uniform(lo, lo + 2.0), obs=y)


@pytest.mark.parametrize("y", [0.5, np.float64(0.5), np.array(0.5), 1], ids=type)
def test_scalar_observations_against_latent_bounds_compile(y):
    """A Python number or NumPy scalar observed against a latent bound (as ``ppl run --data``
    passes JSON scalars) is handed to numpyro as a JAX array too: before, only NumPy arrays were,
    and a ``float`` raised ``TracerArrayConversionError``."""
    compiled = compile_model(one_uniform_between_latents, (y,))
    flats = jnp.array([[-0.3], [0.6], [-1.6]])
    log_density = jax.jit(jax.vmap(compiled.logdensity))(flats)
    lo = flats[:, 0]
    inside = (lo <= y) & (y <= lo + 2.0)
    expected = jnp.where(inside, dist.Normal(0, 1).log_prob(lo) + jnp.log(0.5), -jnp.inf)
    np.testing.assert_allclose(log_density, expected, rtol=1e-6)
