"""Adaptive tempered SMC (:mod:`inference.smc.tempered`, an adapter on the one engine) on a
conjugate Gaussian-mean model with closed-form posterior moments and evidence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from inference.mcmc import RWMH
from inference.smc import tempered

D, NOBS, S0, SIG = 2, 20, 2.0, 1.0
N, SEEDS, MAX_STAGES = 600, 8, 20
YS = np.random.default_rng(0).normal([1.0, -0.5], SIG, size=(NOBS, D))
YSj = jnp.asarray(YS, jnp.float32)
PREC = 1 / S0**2 + NOBS / SIG**2
POST_MEAN = YS.sum(0) / SIG**2 / PREC
POST_VAR = 1 / PREC
_COV = S0**2 * np.ones((NOBS, NOBS)) + SIG**2 * np.eye(NOBS)
LOG_Z = sum(stats.multivariate_normal(np.zeros(NOBS), _COV).logpdf(YS[:, j]) for j in range(D))


def logprior(x):
    return -0.5 * jnp.sum(x**2) / S0**2 - D * jnp.log(S0) - 0.5 * D * jnp.log(2 * jnp.pi)


def loglik(x):
    r = (YSj - x) / SIG
    return jnp.sum(-0.5 * r**2 - jnp.log(SIG) - 0.5 * jnp.log(2 * jnp.pi))


def _runs(waste_free, steps=6):
    def one(k):
        k1, k2 = jax.random.split(k)
        x0 = S0 * jax.random.normal(k1, (N, D))
        return tempered.run(
            k2,
            logprior,
            loglik,
            x0,
            RWMH(),
            num_mcmc_steps=steps,
            max_stages=MAX_STAGES,
            waste_free=steps if waste_free else None,
        )

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(1), SEEDS))


@pytest.mark.parametrize("waste_free", [False, True])
def test_tempered_smc_conjugate_gaussian(waste_free):
    res = _runs(waste_free)
    assert bool(np.all(res.reached_one))
    k = np.asarray(res.num_stages)
    assert np.all((k >= 2) & (k < MAX_STAGES))
    temps = np.asarray(res.temperature)
    ess = np.asarray(res.ess)
    for i in range(SEEDS):
        t = temps[i, : k[i]]
        assert np.all(np.diff(t) > 0) and t[-1] == 1.0
        # adaptive stages hold the ESS at the target 0.5 N, the last one at least there
        np.testing.assert_allclose(ess[i, : k[i] - 1] / N, 0.5, atol=0.02)
        assert ess[i, k[i] - 1] / N >= 0.5 - 0.02
    # posterior mean: z-test across independent runs
    means = np.asarray(res.particles).mean(1)  # (SEEDS, D)
    z = (means.mean(0) - POST_MEAN) / (means.std(0, ddof=1) / np.sqrt(SEEDS))
    assert np.all(np.abs(z) < 4.5), z
    # every run's mean within 4 posterior sd / sqrt(60) (ESS >= N / 10)
    assert np.all(np.abs(means - POST_MEAN) < 4 * np.sqrt(POST_VAR / 60))
    # posterior variance pooled over runs: relative sd ~ sqrt(2 / (8 * 60)) = 6.5 %; 3 sd
    var = np.asarray(res.particles).var(1).mean(0)
    assert np.all(np.abs(var / POST_VAR - 1) < 0.2), var / POST_VAR
    # log evidence: mean of Z / Z_exact within 4 SE of 1; a factor of 2 (0.69 in log) fails
    lz = np.asarray(res.log_evidence, np.float64)
    ratio = np.exp(lz - LOG_Z)
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / np.sqrt(SEEDS) + 0.02, lz
    assert np.abs(lz - LOG_Z).max() < 0.5, lz - LOG_Z
    # one move per stage, the last at beta = 1, and nothing recorded past the ladder
    acc = np.asarray(res.acceptance_rate)
    for row, stages in zip(acc, np.asarray(res.num_stages), strict=True):
        assert np.all(np.isfinite(row[:stages])) and np.all(np.isnan(row[stages:])), row
    assert np.all((acc[:, 0] > 0.05) & (acc[:, 0] < 0.95)), acc[:, :3]


def test_program_refuses_impossible_options():
    """``target_ess=1.5`` crawled in steps of 1e-6 until max_stages; a ``waste_free`` that
    does not divide N failed with a cryptic cond-branch type error."""
    x = jnp.zeros((100, 1))
    for options, message in [({"target_ess": 1.5}, "target_ess"), ({"waste_free": 3}, "divides")]:
        with pytest.raises(ValueError, match=message):
            tempered.program(lambda v: 0.0, lambda v: 0.0, x, RWMH(), **options)
