"""DiffusionPrior as a numpyro distribution and sample_diffusion with ArviZ export."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import xarray as xr

from inference.diffusion.metrics import energy_distance, energy_distance_null
from inference.diffusion.sde import EDMSDE, VPSDE
from models.gmm import GaussianMixture
from ppl.diffusion import DiffusionPrior, DiffusionSamples, sample_diffusion


@pytest.fixture(scope="module")
def gmm():
    return GaussianMixture(
        jnp.array([0.4, 0.6]), jnp.array([[-2.0, 0.5], [1.5, -1.0]]), jnp.array([0.3, 0.5])
    )


@pytest.fixture(scope="module")
def prior(gmm):
    return gmm.diffusion_prior(VPSDE(), steps=300)


def test_sample_shapes_and_numpyro_site(prior):
    x = prior.sample(jax.random.PRNGKey(0), (3, 4))
    assert x.shape == (3, 4, 2)
    assert prior.sample(jax.random.PRNGKey(0)).shape == (2,)

    def model():
        numpyro.sample("z", prior)

    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace()
    assert tr["z"]["value"].shape == (2,)
    assert prior.support is numpyro.distributions.constraints.real_vector


def test_edm_sde_uses_the_edm_grid_by_default():
    """EDMSDE's time is its noise level on [0.002, 80]: a grid uniform in t leaves the last
    step from 0.8 to 0.002 at 100 steps, and the samples come out far too narrow. The default
    grid of an EDMSDE prior is Karras et al.'s. Exact mixture, sd sqrt(1.25) = 1.118; 2000
    draws give the sd to about 1.6% (one SE ~ 0.018)."""
    mix = GaussianMixture(
        jnp.array([0.5, 0.5]), jnp.array([[-1.0], [1.0]]), jnp.array([0.25, 0.25])
    )
    exact = np.sqrt(1.25)
    prior = mix.diffusion_prior(EDMSDE(), steps=100)
    assert prior.grid == "edm" and mix.diffusion_prior(VPSDE()).grid == "uniform"
    sd = {}
    for grid in (None, "uniform"):
        res = sample_diffusion(prior, 2000, seed=0, grid=grid, progress_bar=False)
        sd[grid] = float(np.std(np.asarray(res.samples)))
    assert abs(sd[None] - exact) < 4 * 0.018, sd
    assert sd["uniform"] < exact - 0.3, sd


def test_log_prob_matches_exact_density(prior, gmm):
    # float32 ODE estimate at t_min with the N(0, I) reference: bias O(1e-2) nats (see
    # likelihood tests for the 1e-7 float64 version with the exact p_T)
    x = jnp.array([[[-2.0, 0.5], [1.0, -1.0]], [[0.0, 0.0], [1.5, -0.5]]])
    lp = prior.log_prob(x)
    assert lp.shape == (2, 2)
    exact = gmm.logpdf_t(x, VPSDE().t_min, VPSDE())
    np.testing.assert_allclose(lp, exact, atol=0.05)


def test_sample_diffusion_methods_match_exact(prior, gmm):
    n = 1000
    draw = jax.jit(lambda k, m: gmm.sample(k, m), static_argnums=1)
    null = np.asarray(energy_distance_null(draw, n, 20, jax.random.PRNGKey(7)))
    med, q95 = np.median(null), np.quantile(null, 0.95)
    bound = med + 3.0 * (q95 - med)
    ref = gmm.sample(jax.random.PRNGKey(8), n)
    for method, grid in (("euler_maruyama", "uniform"), ("ddim", "edm")):
        res = sample_diffusion(prior, num_samples=n, steps=200, seed=1, method=method, grid=grid)
        assert isinstance(res, DiffusionSamples) and res.samples.shape == (n, 2)
        ed = float(energy_distance(res.samples, ref))
        print(f"{method}/{grid}: D^2 = {ed:.2e}, bound {bound:.2e}")
        assert ed < bound
    # same seed -> same numbers
    a = sample_diffusion(prior, 10, steps=20, seed=3).samples
    b = sample_diffusion(prior, 10, steps=20, seed=3).samples
    np.testing.assert_array_equal(a, b)


@pytest.mark.arviz
def test_to_arviz(prior):
    res = sample_diffusion(prior, num_samples=50, steps=20, seed=0, method="ode")
    idata = res.to_arviz()
    post = idata.posterior if hasattr(idata, "posterior") else idata["posterior"]
    assert dict(post.sizes) == {"chain": 1, "draw": 50, "x_dim": 2}
    np.testing.assert_allclose(np.asarray(post["x"])[0], np.asarray(res.samples))
    dt = xr.DataTree.from_dict({"posterior": xr.Dataset()})
    assert dt is not None


def test_validation(gmm):
    sde = VPSDE()
    with pytest.raises(ValueError, match=r"score_fn must return .* shape \(2, 2\)"):
        DiffusionPrior(lambda x, t: x.sum(-1), sde, event_shape=(2,))
    with pytest.raises(ValueError, match="score_fn failed"):
        DiffusionPrior(lambda x, t: x @ jnp.ones((3, 3)), sde, event_shape=(2,))
    with pytest.raises(ValueError, match="event_shape"):
        DiffusionPrior(gmm.score_fn(sde), sde)
    with pytest.raises(TypeError, match="sde"):
        DiffusionPrior(gmm.score_fn(sde), "vp", event_shape=(2,))
    prior = DiffusionPrior(gmm.score_fn(sde), sde, event_shape=2)
    with pytest.raises(TypeError, match="DiffusionPrior"):
        sample_diffusion(gmm, 10)
    with pytest.raises(ValueError, match="method"):
        sample_diffusion(prior, 10, method="langevin")
    with pytest.raises(ValueError, match="grid"):
        sample_diffusion(prior, 10, grid="log")
    with pytest.raises(ValueError, match="num_samples"):
        sample_diffusion(prior, 0)


def test_sample_and_log_prob_check_their_input_and_output(prior):
    assert prior.sample(jax.random.PRNGKey(0), (0,)).shape == (0, 2)  # numpyro's convention
    np.testing.assert_array_equal(prior.sample(3, (2,)), prior.sample(jax.random.PRNGKey(3), (2,)))
    with pytest.raises(ValueError, match="non-negative"):
        prior.sample(jax.random.PRNGKey(0), (-1,))  # used to return one draw
    with pytest.raises(TypeError, match="sample_shape"):
        prior.sample(jax.random.PRNGKey(0), (2.5,))
    with pytest.raises(ValueError, match="NaN or infinite"):
        prior.log_prob(jnp.array([[jnp.nan, 0.0]]))


def test_a_score_that_fails_on_the_path_is_reported_not_returned():
    """A score that is NaN for t < 0.5 (the exact score of N(0, 0.1^2 I) otherwise): dopri5
    rejected every step and returned the starting noise (sample sd 1.0, exact 0.1) and
    ``log_prob`` a finite -1.84 (exact 2.14); ``DiffusionPrior.sample`` returned NaN."""
    sde = VPSDE()

    def score(x, t):
        return -x / (sde.marginal_mean_coeff(t) ** 2 * 0.01 + sde.marginal_std(t) ** 2)

    def broken(x, t):
        return jnp.where(t < 0.5, jnp.nan, 1.0) * score(x, t)

    good = DiffusionPrior(score, sde, event_shape=(2,))
    bad = DiffusionPrior(broken, sde, event_shape=(2,))
    x = sample_diffusion(good, 500, method="dopri5", progress_bar=False).samples
    assert np.all(np.abs(np.std(x, axis=0) - 0.1) < 0.01)
    np.testing.assert_allclose(good.log_prob(jnp.array([[0.05, -0.1]])), 2.1420, atol=0.01)
    with pytest.raises(FloatingPointError, match="adaptive solver did not reach t_min"):
        sample_diffusion(bad, 500, method="dopri5", progress_bar=False)
    with pytest.raises(FloatingPointError, match="ODE solve failed"):
        bad.log_prob(jnp.array([[0.05, -0.1]]))
    with pytest.raises(FloatingPointError, match="DiffusionPrior.sample produced non-finite"):
        bad.sample(jax.random.PRNGKey(0), (3,))


def test_compositions_are_dispatched(prior):
    compose = pytest.importorskip("ppl.compose")
    res = sample_diffusion(compose.anneal(prior, 1.0), num_samples=50, steps=10, seed=0)
    assert res.samples.shape == (50, 2)
    with pytest.raises(ValueError, match="method"):
        sample_diffusion(compose.anneal(prior, 1.0), 50, steps=10, method="ddim")
