"""The model compiler: log density with Jacobians, initial points, maps, and input errors."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.distributions import constraints
from scipy import stats

import ppl
from ppl.model import compile_model


def scale_model(y=None):
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    loc = numpyro.sample("loc", dist.Normal(1.0, 3.0))
    with numpyro.plate("obs", 5):
        numpyro.sample("y", dist.Normal(loc, sigma), obs=y)


Y = np.array([0.3, -1.2, 2.0, 0.7, 1.1])


def test_log_density_includes_jacobian_and_splits_prior_and_likelihood():
    compiled = compile_model(scale_model, (), {"y": Y})
    assert compiled.dim == 2
    sigma, loc = 1.7, -0.7
    z = compiled.to_unconstrained({"sigma": sigma, "loc": loc})
    np.testing.assert_allclose(np.sort(np.asarray(z)), np.sort([np.log(sigma), loc]), rtol=1e-6)
    log_prior = (
        stats.halfnorm(scale=2.0).logpdf(sigma) + np.log(sigma) + stats.norm(1.0, 3.0).logpdf(loc)
    )
    log_lik = stats.norm(loc, sigma).logpdf(Y).sum()
    prior, lik = compiled.log_prior_and_likelihood(z)
    assert float(prior) == pytest.approx(log_prior, rel=1e-5)
    assert float(lik) == pytest.approx(log_lik, rel=1e-5)
    assert float(compiled.logdensity(z)) == pytest.approx(log_prior + log_lik, rel=1e-5)


def test_round_trip_between_spaces_and_deterministic_sites():
    def model():
        x = numpyro.sample("x", dist.Dirichlet(jnp.ones(3)))
        numpyro.sample("s", dist.LogNormal(0.0, 1.0))
        numpyro.deterministic("x_max", jnp.max(x))

    compiled = compile_model(model)
    assert compiled.dim == 3  # 2 for the simplex, 1 for the positive scalar
    z = jnp.array([0.2, -0.3, 0.5])
    values = compiled.constrained_draws(z)
    assert values["x"].sum() == pytest.approx(1.0, abs=1e-6)
    assert float(values["x_max"]) == pytest.approx(float(values["x"].max()))
    np.testing.assert_allclose(compiled.to_unconstrained(values), z, atol=1e-5)
    assert jnp.allclose(compiled.to_constrained(z)["x"], values["x"])


def test_initial_positions_are_finite_and_in_range():
    compiled = compile_model(scale_model, (), {"y": Y})
    positions = compiled.initial_positions(jax.random.PRNGKey(0), 8)
    assert positions.shape == (8, 2)
    assert np.all(np.abs(positions) < 2.0)
    assert np.all(np.isfinite(jax.vmap(compiled.logdensity)(positions)))


def test_pointwise_log_likelihood_matches_scipy():
    compiled = compile_model(scale_model, (), {"y": Y})
    samples = {"sigma": jnp.array([1.0, 2.0]), "loc": jnp.array([0.0, 0.5])}
    lls = compiled.pointwise_log_likelihood(samples)
    assert lls["y"].shape == (2, 5)
    np.testing.assert_allclose(lls["y"][1], stats.norm(0.5, 2.0).logpdf(Y), rtol=1e-5)


def test_factor_counts_as_likelihood_not_prior():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("penalty", -0.5 * x**2)

    compiled = compile_model(model)
    assert compiled.factors == ["penalty"] and not compiled.observed
    prior, lik = compiled.log_prior_and_likelihood(jnp.array([2.0]))
    assert float(lik) == pytest.approx(-2.0)
    assert float(prior) == pytest.approx(stats.norm.logpdf(2.0), rel=1e-6)


def test_discrete_latent_site_is_rejected_by_name():
    def model():
        numpyro.sample("k", dist.Poisson(3.0))

    with pytest.raises(ValueError, match="latent site 'k' has a discrete distribution"):
        compile_model(model)


def test_subsampled_plate_is_rejected_by_name():
    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("rows", 100, subsample_size=10) as idx:
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y[idx])

    with pytest.raises(ValueError, match="plate 'rows' subsamples 10 of 100 elements"):
        compile_model(model, (np.zeros(100),))

    # the full plate (subsample_size equal to the size) is fine
    def full(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("rows", 100, subsample_size=100):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    assert compile_model(full, (np.zeros(100),)).dim == 1


def test_support_without_bijection_is_rejected_by_name():
    class Odd(constraints.Constraint):
        def __call__(self, x):
            return x > 0

        def feasible_like(self, prototype):
            return jnp.ones_like(prototype)

    class OddDist(dist.Distribution):
        support = Odd()

        def sample(self, key, sample_shape=()):
            return jnp.ones(sample_shape)

        def log_prob(self, value):
            return jnp.zeros_like(value)

    def model():
        numpyro.sample("w", OddDist())

    with pytest.raises(ValueError, match="latent site 'w' has support"):
        compile_model(model)


def test_observed_value_of_wrong_shape_is_rejected_by_name():
    with pytest.raises(ValueError, match="observed site 'y': obs has shape \\(4,\\)"):
        compile_model(scale_model, (), {"y": Y[:4]})


def test_observed_nan_is_rejected_by_name():
    bad = Y.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="observed site 'y' contains 1 non-finite"):
        compile_model(scale_model, (), {"y": bad})


def test_nan_where_obs_mask_hides_it_is_accepted_and_changes_nothing():
    """numpyro's obs_mask: missing values may be NaN. The density and its gradient are those of
    the same data with any finite filler; NaN where the mask keeps the value is still refused."""

    def missing(y, mask):
        m = numpyro.sample("m", dist.Normal(0.0, 5.0))
        with numpyro.plate("n", len(y)):
            numpyro.sample("y", dist.Normal(m, 1.0), obs=y, obs_mask=mask)

    y = np.array([0.3, np.nan, 1.2, np.nan])
    mask = np.isfinite(y)
    with_nan = compile_model(missing, (y, mask))
    filled = compile_model(missing, (np.nan_to_num(y, nan=50.0), mask))
    flat = jnp.array([0.4, -1.0, 0.7, 2.0, 0.1])[: with_nan.dim]
    value, grad = jax.value_and_grad(with_nan.logdensity)(flat)
    np.testing.assert_allclose(value, filled.logdensity(flat), rtol=1e-6)
    np.testing.assert_allclose(grad, jax.grad(filled.logdensity)(flat), rtol=1e-6)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    with pytest.raises(ValueError, match="'y_observed' contains 1 non-finite value.*not masked"):
        compile_model(missing, (y, np.array([True, True, True, False])))


def test_nan_under_a_mask_inside_wrappers_is_accepted():
    """A mask below ``to_event`` (the inpainting form) hides its NaN entries as well as one at
    the top does; the check used to read the outermost distribution's mask only."""

    def model(m, y):
        x = numpyro.sample("x", dist.Normal(jnp.zeros(2), 1.0).to_event(1))
        numpyro.sample("y", dist.Normal(x, 0.7).mask(jnp.asarray(m)).to_event(1), obs=y)

    mask = np.array([True, False])
    y = np.array([2.0, np.nan])
    compiled = compile_model(model, (mask, y))
    filled = compile_model(model, (mask, np.nan_to_num(y, nan=9.0)))
    flat = jnp.array([0.3, -0.4])
    value, grad = jax.value_and_grad(compiled.logdensity)(flat)
    np.testing.assert_allclose(value, filled.logdensity(flat), rtol=1e-6)
    np.testing.assert_allclose(grad, jax.grad(filled.logdensity)(flat), rtol=1e-6)
    with pytest.raises(ValueError, match="'y' contains 1 non-finite value.*not masked"):
        compile_model(model, (np.array([True, True]), y))


def test_observations_outside_an_event_support_are_checked_under_an_elementwise_mask():
    def model(y):
        w = numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))
        with numpyro.plate("n", 2), numpyro.handlers.mask(mask=jnp.array([True, False])):
            numpyro.sample("y", dist.Dirichlet(10 * w), obs=y)

    ok = np.array([[0.2, 0.3, 0.5], [5.0, 5.0, 5.0]])  # the second row is masked out
    assert compile_model(model, (ok,)).dim == 2
    with pytest.raises(ValueError, match="'y' has 1 value.*outside the support"):
        compile_model(model, (ok[::-1],))


def test_obs_mask_imputation_has_no_flat_directions():
    """numpyro's ``y_unobserved`` holds an entry for every position; those at observed positions
    have no density (flat: NUTS hit the maximum tree depth on 100% of draws, R-hat 3.7 on
    them). They get N(0, 1) on the unconstrained scale: the log density is numpyro's plus
    exactly that term, and NUTS then imputes the missing value at its exact posterior
    predictive mean (conjugate: m | y_obs ~ N(mu_n, s_n^2), y_miss ~ N(mu_n, 1 + s_n^2))."""
    from numpyro.infer.util import potential_energy

    def missing(y, mask):
        m = numpyro.sample("m", dist.Normal(0.0, 5.0))
        with numpyro.plate("n", len(y)):
            numpyro.sample("y", dist.Normal(m, 1.0), obs=y, obs_mask=mask)

    y = np.array([0.3, np.nan, 1.2, 2.1, 0.9])
    mask = np.isfinite(y)
    compiled = compile_model(missing, (y, mask))
    assert compiled.imputed == ("y_unobserved",)
    flat = jnp.linspace(-1.0, 1.5, compiled.dim)
    params = compiled.unravel(flat)
    numpyro_value = -potential_energy(missing, (jnp.nan_to_num(y), mask), {}, params)
    filler = params["y_unobserved"][mask]
    reference = jnp.sum(-0.5 * filler**2 - 0.5 * jnp.log(2 * jnp.pi))
    np.testing.assert_allclose(compiled.logdensity(flat), numpyro_value + reference, rtol=1e-6)

    post = ppl.mcmc(missing, y, mask, chains=2, warmup=300, draws=500, progress_bar=False)
    assert not post.stats["reached_max_treedepth"].any()
    precision = 1 / 25 + mask.sum()
    mean, var = np.nansum(y) / precision, 1 + 1 / precision
    imputed = post.samples["y"][..., 1]
    se = np.sqrt(var / float(az.ess(imputed)))
    assert abs(imputed.mean() - mean) < 4 * se, (imputed.mean(), mean, se)
    assert abs(imputed.var() - var) < 0.25 * var


def test_obs_mask_imputation_has_no_flat_directions_with_enumerated_sites():
    """The same N(0, 1) reference on the marginal density of a model whose discrete site is
    summed out (before it, the unused entries drifted to 1e10 with every draw at the maximum
    tree depth): moving one unused entry from u0 to u1 changes the log density and the log
    prior by exactly -(u1^2 - u0^2) / 2 and the log likelihood not at all."""

    def mixture(y, mask):
        w = numpyro.sample("w", dist.Beta(2.0, 2.0))
        z = numpyro.sample("z", dist.Bernoulli(w))
        with numpyro.plate("n", len(y)):
            numpyro.sample("y", dist.Normal(2.0 * z - 1.0, 1.0), obs=y, obs_mask=mask)

    y = np.array([0.3, np.nan, 1.2, 2.1, 0.9])
    mask = np.isfinite(y)
    compiled = compile_model(mixture, (y, mask))
    assert compiled.enumerated == ("z",) and compiled.imputed == ("y_unobserved",)
    flat = jnp.linspace(-1.0, 1.5, compiled.dim)
    unused = compiled.unravel(flat)["y_unobserved"].at[0].set(2.5)
    moved = ravel_pytree({**compiled.unravel(flat), "y_unobserved": unused})[0]
    u0, u1 = compiled.unravel(flat)["y_unobserved"][0], 2.5
    change = -0.5 * (u1**2 - u0**2)
    density_change = compiled.logdensity(moved) - compiled.logdensity(flat)
    np.testing.assert_allclose(density_change, change, rtol=1e-5)
    prior_change = compiled.log_prior(moved) - compiled.log_prior(flat)
    np.testing.assert_allclose(prior_change, change, rtol=1e-5)
    lik = compiled.log_likelihood(moved), compiled.log_likelihood(flat)
    np.testing.assert_allclose(*lik, rtol=1e-5)

    post = ppl.mcmc(mixture, y, mask, chains=1, warmup=150, draws=100, progress_bar=False)
    assert not post.stats["reached_max_treedepth"].any()


def test_model_that_raises_is_reported_as_such():
    def model():
        raise KeyError("oops")

    with pytest.raises(RuntimeError, match="the model raised while being traced"):
        compile_model(model)

    def numpy_on_a_tracer():  # JAX's tracer errors cannot be rebuilt from a message
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        jax.jit(lambda v: float(v))(x)

    with pytest.raises(TypeError, match="(?s)traced: Abstract tracer.*use jnp rather than"):
        compile_model(numpy_on_a_tracer)


def test_log_density_non_finite_everywhere_names_the_site():
    def model():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Uniform(10.0 + x**2, 11.0 + x**2), obs=jnp.array(0.0))

    compiled = compile_model(model)
    message = "not finite at any of 100 initial points.*'y'"
    with pytest.raises(ValueError, match=message):
        compiled.initial_positions(jax.random.PRNGKey(0), 2)
    # ppl.mcmc searches for its starts inside its initialisation program: same error, raised
    # before the sampler is compiled
    with pytest.raises(ValueError, match=message):
        ppl.mcmc(model, chains=2, warmup=10, draws=10, progress_bar=False)


def test_improper_flat_prior_traces_and_compiles():
    def model(y=None):
        beta = numpyro.sample("beta", dist.ImproperUniform(constraints.real, (), (2,)))
        sigma = numpyro.sample("sigma", dist.ImproperUniform(constraints.positive, (), ()))
        numpyro.sample("y", dist.Normal(beta[0] + beta[1], sigma), obs=y)

    compiled = compile_model(model, (), {"y": jnp.array([0.1, 0.3])})
    assert compiled.dim == 3
    z = compiled.to_unconstrained({"beta": jnp.array([0.1, 0.1]), "sigma": 1.0})
    expected = stats.norm(0.2, 1.0).logpdf([0.1, 0.3]).sum()  # flat priors; log|J| = log 1
    assert float(compiled.logdensity(z)) == pytest.approx(expected, rel=1e-5)


def test_observed_values_computed_from_parameters_are_not_data():
    """An ``obs=`` computed from latent values may be non-finite at a random point."""

    def model(y):
        scale = numpyro.sample("scale", dist.LogNormal(0.0, 1.0))
        residual = jnp.sqrt(scale - 100.0) + y  # NaN at every point the trace visits
        numpyro.sample("residual", dist.Normal(0.0, 1.0), obs=residual)

    compiled = compile_model(model, (jnp.array([1.5, 2.0]),), {})
    assert "residual" in compiled.observed
    assert "residual" in compiled.computed_observations
    assert "residual" not in compiled.observed_data  # one arbitrary traced point: not data


def test_observed_data_exported_to_arviz_leaves_out_values_computed_from_parameters():
    def model(y=None):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("b", dist.Delta(2.0 * a), obs=2.0 * a)
        numpyro.sample("y", dist.Normal(a, 1.0), obs=y)

    post = ppl.mcmc(model, y=1.0, chains=1, warmup=50, draws=20, seed=0, progress_bar=False)
    assert list(post.to_arviz().observed_data.data_vars) == ["y"]
    assert float(post.observed_data["y"]) == 1.0


def test_unobserved_delta_site_is_refused_by_name():
    def model():
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.sample("d", dist.Delta(a**2))

    with pytest.raises(ValueError, match=r"latent site 'd' is a Delta .*ppl.deterministic\('d'"):
        compile_model(model, (), {})
