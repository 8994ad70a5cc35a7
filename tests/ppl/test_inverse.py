"""ppl.inverse: structure detection, method dispatch, errors and the Posterior it returns."""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from inference.diffusion.sde import VPSDE
from models import gmm_posterior as gp
from models.gmm import GaussianMixture
from ppl.arviz_io import group_names
from ppl.diffusion import DiffusionPrior
from ppl.inverse import analyse, smc_inverse_problem

SDE = VPSDE()
GMM = GaussianMixture(
    jnp.array([0.4, 0.3, 0.2, 0.1]),
    jnp.array([[-3.0, -3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]]),
    jnp.full((4,), 0.5),
)
PRIOR = DiffusionPrior(GMM.score_fn(SDE), SDE, event_shape=(2,))
A = jnp.array([[1.0, 1.0]])
Y = jnp.array([0.3])
SIGMA = 0.7


def linear_model(y):
    x = numpyro.sample("x", PRIOR)
    numpyro.deterministic("total", x.sum())
    numpyro.sample("y", dist.Normal(A @ x, SIGMA), obs=y)


def test_detects_linear_gaussian_and_recovers_A():
    p = analyse(linear_model, (Y,))
    assert p.linear and p.site == "x" and p.dim == 2
    np.testing.assert_allclose(p.A, np.asarray(A), atol=1e-6)
    np.testing.assert_allclose(p.sigma, [SIGMA], atol=1e-6)


def test_detects_inpainting_mask_offset_and_heteroscedastic_scale():
    def model(y):
        x = numpyro.sample("x", PRIOR)
        mask = jnp.array([True, False])
        scale = jnp.array([0.5, 2.0])
        numpyro.sample("y", dist.Normal(x + 1.0, scale).mask(mask).to_event(1), obs=y)

    p = analyse(model, (jnp.array([2.0, 5.0]),))
    assert p.linear
    np.testing.assert_allclose(p.A, [[1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(p.y, [1.0], atol=1e-6)  # offset b = 1 removed
    np.testing.assert_allclose(p.sigma, [0.5], atol=1e-6)
    x = jnp.array([0.3, -0.4])
    np.testing.assert_allclose(p.log_lik_linear(x), p.log_lik(x), rtol=1e-5)


def test_replicate_observations_in_a_plate_with_to_event_are_linear():
    """``plate`` over rows of ``Normal(x, s).to_event(1)``: the value was broadcast against the
    batch shape only, a raw NumPy error (numpyro evaluates this model fine)."""
    ys = jnp.array([[0.3, 2.0], [0.5, 1.5], [0.1, 1.0]])

    def model(y):
        x = numpyro.sample("x", PRIOR)
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Normal(x, 2.0).to_event(1), obs=y)

    p = analyse(model, (ys,))
    assert p.linear
    np.testing.assert_allclose(p.A, np.tile(np.eye(2), (3, 1)), atol=1e-6)
    np.testing.assert_allclose(p.y, ys.reshape(-1), atol=1e-6)
    x = jnp.array([0.3, -0.4])
    np.testing.assert_allclose(p.log_lik_linear(x), p.log_lik(x), rtol=1e-5)


def test_nan_in_a_masked_entry_is_a_filler():
    """Inpainting with the mask under ``to_event`` and NaN where nothing is observed: refused
    as "non-finite where it is not masked" before; now the same run as with a finite filler.
    ``obs_mask=`` (an imputation site) is refused with a pointer to ``.mask``."""
    import ppl

    def model(y):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(x, 0.7).mask(jnp.array([True, False])).to_event(1), obs=y)

    options = dict(particles=128, steps=10, seed=0, progress_bar=False)
    with_nan = ppl.smc(model, jnp.array([2.0, jnp.nan]), **options)
    filled = ppl.smc(model, jnp.array([2.0, 5.0]), **options)
    np.testing.assert_array_equal(with_nan.samples["x"], filled.samples["x"])
    assert with_nan.log_evidence == filled.log_evidence

    def imputing(y):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(x, 0.7), obs=y, obs_mask=jnp.array([True, False]))

    with pytest.raises(ValueError, match=r"come from obs_mask=.*\.mask\(m\)"):
        ppl.smc(imputing, jnp.array([2.0, jnp.nan]), **options)


@pytest.mark.parametrize(
    "obs_fn, reason",
    [
        (lambda x: dist.Normal(jnp.abs(x[0]), 0.5), "not linear"),
        (lambda x: dist.Normal(x[0], jnp.exp(x[1])), "scale"),
        (lambda x: dist.Bernoulli(logits=x[0] - x[1]), "Bernoulli"),
    ],
)
def test_non_linear_observations_are_general(obs_fn, reason):
    def model(y):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", obs_fn(x), obs=y)

    p = analyse(model, (jnp.array(1.0),))
    assert not p.linear and reason in p.reason


def test_errors():
    with pytest.raises(ValueError, match="method"):
        smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "nuts")

    def nonlinear(y):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(jnp.abs(x[0]), 0.5), obs=y)

    with pytest.raises(ValueError, match="mcgdiff"):
        smc_inverse_problem(nonlinear, (jnp.array(1.0),), {}, 10, 0, "mcgdiff")

    def two_latents(y):
        x = numpyro.sample("x", PRIOR)
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(A @ x, s), obs=y)

    with pytest.raises(ValueError, match="besides the DiffusionPrior"):
        analyse(two_latents, (Y,))

    def no_obs():
        numpyro.sample("x", PRIOR)

    with pytest.raises(ValueError, match="no observed site"):
        analyse(no_obs)
    with pytest.raises(ValueError, match="particles"):
        smc_inverse_problem(linear_model, (Y,), {}, 1, 0)


def test_afdps_refuses_a_grid_its_euler_maruyama_step_cannot_follow():
    """du lambda_t e_t^2 g^2 |A|^2 / sigma^2 at its largest (VP, beta_max = 20, uniform grid),
    with sigma = 0.7 and |A|^2 = 2: with the paper's potential (lambda = e = 1)
    0.2 * 2 / 0.49 = 0.82 at 100 steps (refused, pointing to 164 steps, where it is 0.5); with
    the rescaled one, 25 steps are accepted and 10 refused (0.86). Where the check fires AFDPS
    returned evidences tens to hundreds of nats off, without failing."""
    with pytest.raises(ValueError, match=r"steps=100.*reaches 0\.82.*steps >= 16[45]"):
        smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "afdps", steps=100, potential="noisy")
    with pytest.raises(ValueError, match=r"steps=10: .*reaches 0\.86.*steps >= \d\d"):
        smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "afdps", steps=10)
    post = smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "afdps", steps=25, progress_bar=False)
    assert post.samples["x"].shape == (1, 10, 2)


def test_afdps_options_are_checked_and_reach_the_sampler():
    with pytest.raises(ValueError, match="potential= applies to method='afdps' only"):
        smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "tds", potential="noisy")
    with pytest.raises(
        ValueError, match=r"unknown potential 'clean'; expected one of \['noisy', 'rescaled'\]"
    ):
        smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "afdps", potential="clean")
    with pytest.raises(ValueError, match="likelihood_scale= applies to method='afdps' with"):
        smc_inverse_problem(
            linear_model, (Y,), {}, 10, 0, "afdps", potential="noisy", likelihood_scale=1.0
        )
    with pytest.raises(ValueError, match="likelihood_scale"):
        smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "afdps", likelihood_scale=0.0)
    # the default is 0.5 sigma / |A|_2; given explicitly it is the same run, another differs
    kw = dict(steps=25, progress_bar=False)
    default = smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "afdps", **kw)
    same = smc_inverse_problem(
        linear_model, (Y,), {}, 10, 0, "afdps", likelihood_scale=0.5 * SIGMA / 2**0.5, **kw
    )
    other = smc_inverse_problem(linear_model, (Y,), {}, 10, 0, "afdps", likelihood_scale=0.1, **kw)
    np.testing.assert_allclose(same.samples["x"], default.samples["x"], rtol=1e-5)
    assert not np.allclose(other.samples["x"], default.samples["x"])


def test_afdps_through_ppl_matches_exact_evidence_and_modes():
    """The ppl path of AFDPS (whitened likelihood, exact start, likelihood scale): one run of
    4000 particles over 200 steps. The core sampler's bias here is about +0.03 nats (+0.058 at
    100 steps, -0.003 +- 0.015 at 400: test_afdps.py) and a run's SD about 0.03, so 0.15 nats
    is 4 SD plus the bias; the mode mass ~0.6 has an SE of ~0.01 (5 SE: 0.04)."""
    post = smc_inverse_problem(
        linear_model, (Y,), {}, 4000, 3, "afdps", steps=200, progress_bar=False
    )
    exact = float(gp.log_evidence(GMM, A, Y, SIGMA))
    assert abs(post.log_evidence - exact) < 0.15, (post.log_evidence, exact)
    frac = float((post.samples["x"][0, :, 0] > 0).mean())
    post_gmm = gp.posterior(GMM, A, Y, SIGMA)  # components 6 SD from x1 = 0
    exact_frac = float(jnp.sum(jnp.where(post_gmm.means[:, 0] > 0, post_gmm.weights, 0.0)))
    assert abs(frac - exact_frac) < 0.04, (frac, exact_frac)


def test_auto_uses_mcgdiff_and_returns_posterior():
    post = smc_inverse_problem(linear_model, (Y,), {}, particles=1000, seed=0, steps=50)
    assert post.attrs["method"] == "smc/diffusion/mcgdiff"
    assert post.samples["x"].shape == (1, 1000, 2)
    np.testing.assert_allclose(post.samples["total"], post.samples["x"].sum(-1), rtol=1e-5)
    assert post.stages["ess"].shape == (1, 51)
    exact = float(gp.log_evidence(GMM, A, Y, SIGMA))
    assert abs(post.log_evidence - exact) < 0.5
    # both plausible modes are populated (exact masses 0.6 / 0.4)
    frac = (post.samples["x"][0, :, 0] > 0).mean()
    assert 0.45 < frac < 0.75
    idata = post.to_arviz()
    assert {"smc_stages", "log_likelihood"} <= group_names(idata)
    assert idata.posterior["x"].shape == (1, 1000, 2)


def test_ppl_smc_dispatches_to_diffusion_time_smc():
    """Wiring: ppl.smc sends a model with a DiffusionPrior site to diffusion-time SMC (the
    samplers' accuracy is tested against the exact posterior in tests/inference/diffusion)."""
    import ppl

    post = ppl.smc(linear_model, Y, particles=256, seed=0, steps=30)
    assert post.attrs["method"].startswith("smc/diffusion/mcgdiff")
    assert post.samples["x"].shape == (1, 256, 2) and np.isfinite(post.log_evidence)
    assert post.log_likelihood["y"].shape == (1, 256, 1)
    quiet = ppl.smc(linear_model, Y, particles=256, seed=0, steps=30, log_likelihood=False)
    assert quiet.log_likelihood == {}  # was computed regardless
    assert "log_likelihood" not in group_names(quiet.to_arviz())
    with pytest.raises(ValueError, match="method"):
        ppl.smc(linear_model, Y, particles=256, method="gibbs")


def test_tds_rejuvenation_option():
    """``diffusion_options={"rejuvenation": ...}`` reaches the TDS engine (MALA after each
    resampling; accuracy in tests/inference/diffusion/posterior/test_rejuvenation.py)."""
    import ppl

    opts = {"rejuvenation": {"steps": 2, "step_size": 0.5}}
    post = ppl.smc(
        linear_model,
        Y,
        particles=1000,
        seed=0,
        steps=30,
        method="tds",
        diffusion_options=opts,
        progress_bar=False,
    )
    assert post.attrs["method"] == "smc/diffusion/tds"
    assert np.all(np.isfinite(post.samples["x"])) and np.isfinite(post.log_evidence)
    frac = (post.samples["x"][0, :, 0] > 0).mean()
    assert 0.45 < frac < 0.75
    with pytest.raises(ValueError, match="rejuvenation"):
        smc_inverse_problem(linear_model, (Y,), method="mcgdiff", rejuvenation={"steps": 1})
    with pytest.raises(ValueError, match="step_size"):
        smc_inverse_problem(linear_model, (Y,), method="tds", rejuvenation={"step_size": 2.0})
    with pytest.raises(ValueError, match="unknown keys"):
        smc_inverse_problem(linear_model, (Y,), method="tds", rejuvenation={"h": 0.1})


def test_the_priors_grid_is_the_samplers_grid():
    """A DiffusionPrior built with grid="edm" is sampled on that grid along diffusion time."""
    from inference.diffusion.samplers import time_grid

    prior = DiffusionPrior(GMM.score_fn(SDE), SDE, event_shape=(2,), grid="edm")

    def model(y):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0] + x[1], 0.5), obs=y)

    post = smc_inverse_problem(
        model, (Y,), method="tds", steps=10, particles=16, progress_bar=False
    )
    np.testing.assert_allclose(post.stages["time"][0], time_grid(SDE, 10, "edm")[1:], rtol=1e-6)
