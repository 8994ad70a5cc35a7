"""ppl.compose: coefficient algebra, argument validation and the sampling entry point."""

import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.sde import VESDE, VPSDE
from models import gmm_targets as gt
from models.gmm import GaussianMixture
from ppl import compose as C
from ppl.diffusion import DiffusionPrior

SDE = VPSDE()


def g1(d=1):
    return GaussianMixture(
        jnp.array([0.5, 0.5]), jnp.array([[-0.5] * d, [0.5] * d]), jnp.full(2, 0.25)
    )


def g2(d=1):
    return GaussianMixture(jnp.ones(1), jnp.array([[0.5] * d]), jnp.full(1, 0.25))


@pytest.fixture(scope="module")
def priors():
    return gt.exact_prior(g1(), SDE), gt.exact_prior(g2(), SDE)


def test_coefficient_algebra(priors):
    p1, p2 = priors
    a = C.anneal(C.product(p1, p2), 2.0)
    b = C.product(C.anneal(p1, 2.0), C.anneal(p2, 2.0))
    assert a.components == b.components == (p1, p2)
    assert a.coeffs == b.coeffs == (2.0, 2.0)
    assert a.beta == b.beta == 2.0
    assert C.anneal(C.anneal(p1, 2.0), 1.5).coeffs == (3.0,)
    assert C.product(p1, p1).coeffs == (2.0,)  # the same prior is merged
    cfg = C.guided(p2, p1, 3.0)  # cond, uncond
    assert cfg.components == (p1, p2) and cfg.coeffs == (-2.0, 3.0) and cfg.kind == "guided"
    geo = C.geometric(p1, p2, 0.25)
    assert geo.coeffs == (0.75, 0.25) and geo.beta == 1.0
    assert C.product(C.anneal(p1, 2.0), C.anneal(p2, 3.0)).beta is None

    def beta(tau):
        return 1.0 + 2.0 * tau

    v = C.product(C.anneal(p1, beta), C.anneal(p2, beta))
    assert v.beta is beta
    assert float(v.coeffs[0](0.5)) == pytest.approx(2.0)
    w = C.anneal(C.product(p1, p2), beta)
    assert float(w.coeffs[1](1.0)) == pytest.approx(3.0)


def test_validation_names_the_argument(priors):
    p1, p2 = priors
    ve = gt.exact_prior(g2(), VESDE())
    two_d = gt.exact_prior(g2(2), SDE)
    with pytest.raises(ValueError, match=r"priors\[1\].*SDE"):
        C.product(p1, ve)
    with pytest.raises(ValueError, match="p2.*event shape"):
        C.geometric(p1, two_d, 0.5)
    with pytest.raises(ValueError, match="cond"):
        C.guided(ve, p1, 2.0)
    with pytest.raises(ValueError, match="beta"):
        C.anneal(p1, 0.0)
    with pytest.raises(ValueError, match="beta"):
        C.anneal(p1, lambda tau: 1.0 - 2.0 * tau)
    with pytest.raises(ValueError, match="scale"):
        C.guided(p2, p1, -1.0)
    with pytest.raises(ValueError, match="mode"):
        C.superpose(p1, p2, mode="xor")
    with pytest.raises(ValueError, match="weights"):
        C.superpose(p1, p2, weights=[1.0, -1.0])
    # AND has no mixture weights or temperature: refused, not dropped (they were ignored)
    with pytest.raises(ValueError, match=r"mode='and'\) takes no weights="):
        C.superpose(p1, p2, mode="and", weights=[0.1, 0.9])
    with pytest.raises(ValueError, match="takes no weights= or temperature="):
        C.superpose(p1, p2, mode="and", weights=[0.1, 0.9], temperature=100.0)
    assert C.superpose(p1, p2, mode="and", temperature=1.0).mode == "and"
    # beta(tau) runs traced inside the sampler: Python control flow on tau, float() or numpy
    # used to pass the check at concrete tau and fail in compilation with a bare JAX error
    for untraceable in (
        lambda tau: 3.0 if tau > 0.5 else 1.0,
        lambda tau: float(1.0 + 2.0 * tau),
        lambda tau: np.exp(np.asarray(tau)),
    ):
        with pytest.raises(ValueError, match=r"beta\(tau\) must be traceable by jax.jit"):
            C.anneal(p1, untraceable)
    C.anneal(p1, lambda tau: jnp.where(tau > 0.5, 3.0, 1.0))
    with pytest.raises(TypeError, match="prior"):
        C.anneal("not a prior", 2.0)
    with pytest.raises(ValueError, match="tempered"):
        C.sample_composition(C.anneal(p1, lambda t: 1.0 + t), 8, steps=2, noise="tempered")
    with pytest.raises(ValueError, match="num_samples"):
        C.sample_composition(C.anneal(p1, 2.0), 0)


def test_sample_fkc_result_and_arviz(priors):
    p1, p2 = priors
    res = C.sample_composition(C.guided(p2, p1, 2.0), 512, steps=50, seed=3)
    assert res.samples.shape == (512, 1) and res.method == "fkc"
    assert np.isfinite(res.log_normalizer)
    assert res.ess.shape == (50,) and res.kappa is None
    idata = res.to_arviz()
    post = idata.posterior
    assert dict(post["x"].sizes) == {"chain": 1, "draw": 512, "x_dim": 1}
    same = C.sample_composition(C.guided(p2, p1, 2.0), 512, steps=50, seed=3)
    np.testing.assert_array_equal(res.samples, same.samples)
    heur = C.sample_composition(C.guided(p2, p1, 2.0), 512, steps=50, seed=3, weighted=False)
    assert heur.log_normalizer is None and heur.method == "heuristic"


def test_gpu_settings_resample_every_and_unroll(priors):
    """The README's GPU recipe (``resample_every=10, unroll=True``): unrolling changes only the
    compiled loop, so the particles, evidence and ESS are those of the rolled blocks (both run
    in the progress bar's chunks)."""
    p1, p2 = priors
    target = C.guided(p2, p1, 2.0)
    rolled = C.sample_composition(target, 256, steps=40, seed=1, resample_every=10)
    unrolled = C.sample_composition(target, 256, steps=40, seed=1, resample_every=10, unroll=True)
    np.testing.assert_allclose(unrolled.samples, rolled.samples, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(unrolled.log_normalizer, rolled.log_normalizer, atol=1e-5)
    np.testing.assert_allclose(unrolled.ess, rolled.ess, rtol=1e-4)
    assert rolled.raw.smc.ancestors is None  # the (steps, N) genealogy is not kept for FKC


def test_sample_superposition_and_warning(priors):
    p1, p2 = priors
    res = C.sample_composition(C.superpose(p1, p2, mode="or", weights=[0.3, 0.7]), 256, steps=40)
    assert res.samples.shape == (256, 1) and res.log_normalizer is None
    assert res.kappa.shape == (40, 2)
    np.testing.assert_allclose(np.asarray(res.kappa).sum(-1), 1.0, atol=1e-5)
    with pytest.warns(UserWarning, match="unstable"):
        r = C.sample_composition(C.anneal(p1, 3.0), 16, steps=4, noise="tempered")
    assert r.samples.shape == (16, 1)


def test_plain_prior_is_accepted():
    p = DiffusionPrior(g2().score_fn(SDE), SDE, event_shape=(1,))
    res = C.sample_composition(p, 64, steps=10)
    assert res.samples.shape == (64, 1)


def test_sample_diffusion_dispatches_compositions(priors):
    import ppl

    p1, p2 = priors
    res = ppl.sample_diffusion(ppl.product(p1, p2), num_samples=64, steps=20, seed=0)
    assert res.samples.shape == (64, 1) and np.all(np.isfinite(res.samples))
    with pytest.raises(ValueError, match="method='ddim' is not available"):
        ppl.sample_diffusion(ppl.anneal(p1, 2.0), num_samples=8, method="ddim")
    with pytest.raises(TypeError, match="target must be a ppl.DiffusionPrior"):
        ppl.sample_diffusion("not a prior", num_samples=8)


def test_degenerate_fkc_run_warns_and_diagnose_says_why():
    """``anneal(p, 3)`` at 5 steps: the weights collapse onto one particle and the
    log-normaliser reads about 1e8 (exact -1.55); this used to come back without a word."""
    import ppl

    prior = g1().diffusion_prior(SDE)
    with pytest.warns(UserWarning, match="FKC sampling problems") as caught:
        res = ppl.sample_diffusion(C.anneal(prior, 3.0), num_samples=300, steps=5, seed=0)
    assert "weights degenerated" in str(caught[0].message)
    diagnosis = res.diagnose()
    assert not diagnosis.ok and diagnosis.min_ess_fraction[0] < 0.01
    assert "distinct" in str(diagnosis)
    heuristic = ppl.sample_diffusion(
        C.anneal(prior, 3.0), num_samples=300, steps=5, seed=0, weighted=False
    )
    assert "heuristic" in str(heuristic.diagnose())


def test_a_score_that_is_nan_somewhere_is_reported_not_cut_out_silently():
    """A score NaN for x_1 > 0.5 at t < 0.5: those particles' FKC weights were NaN, counted as
    zero, and the region vanished from the samples (mean x_1 -0.58 against 0.01) with no word.
    The engine counts NaN log-potentials; FKC and the inverse-problem samplers say so."""
    import numpyro
    import numpyro.distributions as dist

    import ppl

    sde = VPSDE()

    def score(x, t):
        return jnp.where((x[:, :1] > 0.5) & (t < 0.5), jnp.nan, -x)

    bad = DiffusionPrior(score, sde, event_shape=(2,))
    options = dict(num_samples=200, steps=30, progress_bar=False)
    with pytest.warns(UserWarning, match=r"FKC: \d+ particle log-weight\(s\) were NaN"):
        ppl.sample_diffusion(ppl.anneal(bad, 2.0), **options)

    def model(y=None):
        x = numpyro.sample("x", bad)
        numpyro.sample("y", dist.Normal(x[0] + 0.5 * x[1], 1.0), obs=y)

    with pytest.warns(UserWarning, match=r"tds: \d+ particle log-weight\(s\) were NaN"):
        ppl.smc(model, 0.5, particles=200, steps=30, method="tds", progress_bar=False)
