"""``ppl.mcmc`` end to end: a conjugate posterior, ArviZ export, determinism, errors, Ctrl-C."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import inference
import ppl
from ppl.arviz_io import group_names

# Normal mean with known noise: mu ~ N(m0, s0^2), y_i ~ N(mu, s^2).
M0, S0, S = 1.0, 2.0, 1.5
Y = np.random.default_rng(0).normal(0.7, S, size=20)
POST_VAR = 1.0 / (1.0 / S0**2 + len(Y) / S**2)
POST_MEAN = POST_VAR * (M0 / S0**2 + Y.sum() / S**2)


def normal_mean(y=None):
    mu = numpyro.sample("mu", dist.Normal(M0, S0))
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))  # a constrained site, prior only
    with numpyro.plate("data", len(Y)):
        numpyro.sample("y", dist.Normal(mu, S), obs=y)
    numpyro.deterministic("mu_plus_scale", mu + scale)


@pytest.fixture(scope="module")
def post():
    return ppl.mcmc(normal_mean, y=Y, chains=4, warmup=400, draws=500, seed=1, progress_bar=False)


def _z(draws, mean):
    ess = float(az.ess(draws[None] if draws.ndim == 1 else draws))
    return (draws.mean() - mean) / (draws.std() / np.sqrt(ess))


def test_nuts_matches_the_conjugate_posterior(post):
    mu = post.samples["mu"]
    assert mu.shape == (4, 500)
    assert abs(_z(mu, POST_MEAN)) < 4
    # Variance: the sd of the sample sd is about sd / sqrt(2 ESS).
    ess = float(az.ess(mu))
    assert abs(mu.std() - np.sqrt(POST_VAR)) < 4 * np.sqrt(POST_VAR) / np.sqrt(2 * ess)
    # The prior-only half-normal scale: E = sqrt(2/pi).
    assert abs(_z(post.samples["scale"], np.sqrt(2 / np.pi))) < 4
    np.testing.assert_allclose(
        post.samples["mu_plus_scale"], post.samples["mu"] + post.samples["scale"], rtol=1e-5
    )


def test_sample_stats_are_named_as_arviz_expects(post):
    for name in ("lp", "step_size", "acceptance_rate", "diverging", "energy", "n_steps"):
        assert post.stats[name].shape == (4, 500), name
    assert post.stats["tree_depth"].max() <= 10
    assert post.stats["diverging"].dtype == bool
    assert 0.6 < post.stats["acceptance_rate"].mean() < 0.95


@pytest.mark.arviz
def test_to_arviz_has_standard_groups_and_loo_works(post):
    idata = post.to_arviz()
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        assert group in group_names(idata)
    assert idata.posterior["mu"].dims == ("chain", "draw")
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "data")
    energy = post.stats["energy"]
    bfmi = np.mean(np.diff(energy, axis=1) ** 2, axis=1) / np.var(energy, axis=1)
    assert bfmi.min() > 0.3
    loo = az.loo(idata)
    elpd = getattr(loo, "elpd_loo", None) if hasattr(loo, "elpd_loo") else loo.elpd  # 0.2x, 1.x
    assert np.isfinite(elpd)
    summary = post.summary(var_names=["mu"])
    assert summary.loc["mu", "r_hat"] < 1.02


@pytest.mark.arviz
def test_posterior_predictive_is_attached_and_shaped(post):
    ppc = ppl.predictive(normal_mean, posterior=post, y=None, seed=3)
    assert ppc["y"].shape == (4, 500, len(Y))
    assert "posterior_predictive" in group_names(post.to_arviz())
    # Predictive mean of y is the posterior mean of mu.
    assert abs(ppc["y"].mean() - POST_MEAN) < 0.1
    prior = ppl.predictive(normal_mean, num_samples=200, seed=0)
    assert prior["mu"].shape == (1, 200) and prior["y"].shape == (1, 200, len(Y))


@pytest.mark.parametrize("kernel", ["hmc", "mala", "rwmh"])
def test_other_kernels_match_the_conjugate_posterior(kernel):
    post = ppl.mcmc(
        normal_mean,
        y=Y,
        kernel=kernel,
        chains=4,
        warmup=300,
        draws=600,
        seed=2,
        progress_bar=False,
    )
    assert abs(_z(post.samples["mu"], POST_MEAN)) < 4


def test_same_seed_same_numbers_and_chunking_does_not_matter():
    kwargs = dict(y=Y, kernel="rwmh", chains=2, warmup=30, draws=20, seed=5, progress_bar=False)
    a = ppl.mcmc(normal_mean, **kwargs)
    b = ppl.mcmc(normal_mean, **kwargs, chunk_size=7)
    np.testing.assert_array_equal(a.samples["mu"], b.samples["mu"])
    np.testing.assert_array_equal(a.stats["step_size"], b.stats["step_size"])
    c = ppl.mcmc(normal_mean, **{**kwargs, "seed": 6})
    assert not np.array_equal(a.samples["mu"], c.samples["mu"])


def test_dense_mass_kernel_object_and_init_values():
    kernel = inference.NUTS(target_accept=0.9, dense_mass=True)
    post = ppl.mcmc(
        normal_mean,
        y=Y,
        kernel=kernel,
        chains=2,
        warmup=50,
        draws=10,
        seed=0,
        progress_bar=False,
        init={"mu": 0.5},
    )
    assert post.samples["mu"].shape == (2, 10)


@pytest.mark.parametrize("x0", [0.0, -1.0])  # gradient not finite; density not finite
def test_init_values_where_density_or_gradient_is_not_finite_are_refused(x0):
    def kinked():
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        # finite at 0 but its derivative is not; log of a negative number at -1
        numpyro.factor("kink", -jnp.sqrt(jnp.abs(x)) + jnp.log(x + 0.5))

    with pytest.raises(ValueError, match="or its gradient is not finite at the values given in"):
        ppl.mcmc(kinked, chains=2, warmup=10, draws=10, progress_bar=False, init={"x": x0})


def test_keyboard_interrupt_returns_the_completed_draws(monkeypatch):
    import ppl.mcmc_sampler as mcmc_module

    class InterruptingBar(mcmc_module.tqdm):
        calls = 0

        def update(self, n=1):
            InterruptingBar.calls += 1
            if self.desc.startswith("sampling") and InterruptingBar.calls > 4:
                raise KeyboardInterrupt
            return super().update(n)

    monkeypatch.setattr(mcmc_module, "tqdm", InterruptingBar)
    post = ppl.mcmc(normal_mean, y=Y, chains=2, warmup=20, draws=100, seed=0, chunk_size=10)
    assert post.partial
    assert 0 < post.num_draws < 100
    assert post.stats["lp"].shape == (2, post.num_draws)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"kernel": "gibbs"}, ValueError, "unknown kernel 'gibbs'"),
        ({"chains": 0}, ValueError, "chains must be an integer >= 1"),
        ({"warmup": -1}, ValueError, "warmup must be an integer >= 0"),
        ({"draws": 2.5}, TypeError, "draws must be an integer"),
        ({"seed": "x"}, TypeError, "seed must be an int"),
        ({"init": {"nu": 1.0}}, ValueError, "init names unknown latent site"),
    ],
)
def test_bad_arguments_raise_before_compilation(kwargs, error, message):
    with pytest.raises(error, match=message):
        ppl.mcmc(normal_mean, y=Y, progress_bar=False, **kwargs)


def test_unknown_kernel_option_is_named():
    with pytest.raises(TypeError, match="target_acept"):
        inference.NUTS(target_acept=0.9)


def test_discrete_latent_site_is_refused():
    def model():
        numpyro.sample("n", dist.Poisson(2.0))
        numpyro.sample("x", dist.Normal(0.0, 1.0), obs=jnp.array(0.1))

    with pytest.raises(ValueError, match="latent site 'n' has a discrete distribution"):
        ppl.mcmc(model, progress_bar=False)


def test_checkpoint_resume_gives_the_uninterrupted_draws(monkeypatch, tmp_path):
    import ppl.mcmc_sampler as mcmc_module

    kwargs = dict(y=Y, chains=2, warmup=30, draws=40, seed=4, chunk_size=10)
    reference = ppl.mcmc(normal_mean, progress_bar=False, **kwargs)

    class InterruptingBar(mcmc_module.tqdm):
        calls = 0

        def update(self, n=1):
            InterruptingBar.calls += 1
            if InterruptingBar.calls > 5:  # during the third sampling chunk
                raise KeyboardInterrupt
            return super().update(n)

    path = str(tmp_path / "run.npz")
    monkeypatch.setattr(mcmc_module, "tqdm", InterruptingBar)
    partial = ppl.mcmc(normal_mean, checkpoint=path, **kwargs)
    assert partial.partial and partial.num_draws == 30  # the chunk in flight is kept
    monkeypatch.undo()
    resumed = ppl.mcmc(normal_mean, checkpoint=path, progress_bar=False, **kwargs)
    assert not resumed.partial
    np.testing.assert_array_equal(resumed.samples["mu"], reference.samples["mu"])
    np.testing.assert_array_equal(resumed.stats["step_size"], reference.stats["step_size"])
    with pytest.raises(ValueError, match="written with other settings"):
        ppl.mcmc(normal_mean, checkpoint=path, progress_bar=False, **{**kwargs, "seed": 5})
    with pytest.raises(ValueError, match="written for other inputs: the model's data"):
        ppl.mcmc(normal_mean, checkpoint=path, progress_bar=False, **{**kwargs, "y": Y + 5.0})


@pytest.mark.parametrize(
    "first, second",
    [
        ({"seed": np.int64(3)}, {"seed": np.int64(4)}),
        ({"seed": jax.random.PRNGKey(0)}, {"seed": jax.random.PRNGKey(1)}),
        ({"init": {"mu": -5.0}}, {"init": {"mu": 5.0}}),
        ({}, {"init": {"mu": 0.0}}),
    ],
    ids=["numpy-seed", "key", "init", "init-added"],
)
def test_checkpoint_of_another_seed_or_init_is_not_resumed(tmp_path, first, second):
    """A NumPy integer or a PRNG key as the seed, and init=, are settings of the run: resuming
    a file written with others used to return the old run's draws without a word."""
    path = str(tmp_path / "run.npz")
    kwargs = dict(y=Y, chains=1, warmup=5, draws=5, kernel="rwmh", progress_bar=False)
    ppl.mcmc(normal_mean, checkpoint=path, **kwargs, **first)
    with pytest.raises(ValueError, match="written with other settings"):
        ppl.mcmc(normal_mean, checkpoint=path, **kwargs, **second)


def test_init_one_start_per_chain():
    """numpyro's init_params style: a value shaped (chains, *shape) gives each chain its own
    start; a value of the site's shape is shared; the other sites start at random."""
    import jax

    import ppl.mcmc_sampler as mcmc_module
    from ppl.model import compile_model

    compiled = compile_model(normal_mean, (), {"y": Y})
    for given, expected in (([-5.0, 0.0, 5.0], [-5.0, 0.0, 5.0]), (2.0, [2.0, 2.0, 2.0])):
        init = mcmc_module._check_init(compiled, 3, {"mu": np.array(given)})
        flat = mcmc_module._positions_from_init(compiled, jax.random.PRNGKey(0), 3, init)[:, 0]
        starts = jax.vmap(compiled.to_constrained)(flat)["mu"]
        np.testing.assert_allclose(starts, expected, rtol=1e-6)


def _moving_support():
    a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    b = numpyro.sample("b", dist.Uniform(a, a + 2.0))
    c = numpyro.sample("c", dist.Uniform(b, b + 1.0))
    numpyro.sample("obs", dist.Normal(c, 1.0), obs=1.0)


@pytest.mark.parametrize(
    "given", [{"a": 1.0}, {"a": 1.0, "b": 2.5}, {"b": 0.3, "c": 1.2}, {"a": -1.0, "c": 0.5}]
)
def test_init_of_a_site_whose_value_moves_another_sites_support(given):
    """``b ~ Uniform(a, a + 2)`` with ``a`` given: the sites not given keep their random
    *unconstrained* values (numpyro's init_to_value), so they lie inside the supports that the
    given values make; every given value is reached exactly, whatever the order of the
    dependencies. A given value that fits some random values of its parents only is started
    from a candidate where it fits. (The others used to be kept constrained, outside the new
    support: refused.)"""
    import jax

    import ppl.mcmc_sampler as mcmc_module
    from ppl.model import compile_model

    compiled = compile_model(_moving_support, (), {})
    init = mcmc_module._check_init(compiled, 8, given)
    candidates = mcmc_module._positions_from_init(compiled, jax.random.PRNGKey(0), 8, init)
    starts = jax.vmap(jax.vmap(compiled.to_constrained))(candidates)
    a, b, c = (np.asarray(starts[n]) for n in "abc")
    inside = (a < b) & (b < a + 2.0) & (b < c) & (c < b + 1.0)
    if given.keys() <= {"a", "b"}:  # only parents given: every candidate is valid
        assert np.all(inside)
    else:  # a given c lies in (b, b + 1) for some random b only: those candidates are taken
        assert 0.2 < inside.mean() < 0.8 and np.all(np.any(inside, axis=1))
    for name, value in given.items():
        np.testing.assert_allclose(starts[name][inside], value, rtol=1e-6)
    post = ppl.mcmc(_moving_support, init=given, chains=2, warmup=20, draws=5, progress_bar=False)
    assert np.all(np.isfinite(post.samples["c"]))


@pytest.mark.arviz
def test_predictions_at_new_inputs_go_to_the_predictions_group():
    """Replicated data (same inputs) is the posterior predictive; draws at new covariates are
    ArviZ's out-of-sample ``predictions`` group, whose dims may differ from the data's."""
    from ppl.model import compile_model

    def line(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", len(x)):
            numpyro.sample("y", dist.Normal(w * x, 0.1), obs=y)

    x, y = np.linspace(0.0, 1.0, 6), np.linspace(0.0, 2.0, 6)
    post = ppl.Posterior(
        samples={"w": np.full((2, 5), 2.0)},
        observed_data={"y": y},
        compiled=compile_model(line, (x, y), {}),
    )
    ppl.predictive(line, x, posterior=post, y=None, seed=0)
    new = ppl.predictive(line, np.array([2.0, 3.0]), posterior=post, y=None, seed=0)
    assert new["y"].shape == (2, 5, 2) and abs(new["y"].mean() - 5.0) < 0.1
    data = post.to_arviz()
    assert data.posterior_predictive["y"].shape == (2, 5, 6)
    assert data.predictions["y"].shape == (2, 5, 2)
    # new covariates of the data's shape are predictions too (the group went by shape alone)
    shifted = ppl.Posterior(
        samples=post.samples, observed_data={"y": y}, compiled=compile_model(line, (x, y), {})
    )
    ppl.predictive(line, x + 3.0, posterior=shifted, y=None, seed=0)
    assert list(shifted.predictive) == ["predictions"]
    ppl.predictive(line, x=x, posterior=shifted, y=None, seed=0)  # by keyword: the same x
    assert sorted(shifted.predictive) == ["posterior_predictive", "predictions"]
