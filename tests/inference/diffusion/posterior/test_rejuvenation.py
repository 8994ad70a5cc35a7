"""TDS with MALA rejuvenation after each resampling still targets the exact posterior (the
2-d case: mode masses within 4 SE over 8 seeds, within-mode SW, evidence; with the
conditional target the evidence equals that of the runs without rejuvenation)."""

import jax
import numpy as np
import pytest

from inference.diffusion.posterior.common import default_grid
from inference.diffusion.posterior.tds import gaussian_twist, sample_tds, tds_mala_rejuvenation
from models import gmm_posterior as gp

SIGMA = 0.7
STEPS = 30
N = 1000


@pytest.mark.parametrize(
    "target", ["conditional", pytest.param("marginal", marks=pytest.mark.slow)]
)
def test_tds_mala_rejuvenation_matches_exact(case2d, H, target):
    prob = gp.LinearGaussianGMMProblem(case2d.prior, case2d.A, case2d.y, SIGMA)
    twist = gaussian_twist(case2d.sde, case2d.A, case2d.y, SIGMA)
    grid = default_grid(case2d.sde, STEPS)
    log_prob_fn = None
    if target == "marginal":

        def log_prob_fn(x, t):
            return case2d.prior.logpdf_t(x, t, case2d.sde)

    rejuv = tds_mala_rejuvenation(
        case2d.score_fn,
        case2d.sde,
        prob.log_likelihood,
        grid,
        steps=2,
        step_size=0.5,
        log_twist_fn=twist,
        log_prob_fn=log_prob_fn,
    )

    def one(key, rejuvenated):
        # A traced switch, so that the runs without rejuvenation share the compiled program.
        def maybe_rejuvenate(k, particles, t):
            return jax.lax.cond(rejuvenated, rejuv, lambda k, p, t: p, k, particles, t)

        return sample_tds(
            key,
            case2d.score_fn,
            case2d.sde,
            prob.log_likelihood,
            2,
            N,
            STEPS,
            log_twist_fn=twist,
            ess_threshold=1.0,
            rejuvenate=maybe_rejuvenate,
        )

    keys = jax.random.split(jax.random.PRNGKey(3), 2 * H.SEEDS)
    switch = np.arange(2 * H.SEEDS) < H.SEEDS
    both = jax.jit(jax.vmap(one))(keys, switch)
    res = jax.tree.map(lambda a: a[switch], both)
    plain_log_z = np.asarray(both.log_evidence[~switch], np.float64)
    x = np.asarray(res.particles["x"])
    assert np.all(np.isfinite(x))
    s = H.summarise(prob.posterior, x)
    assert np.all(np.abs(s.z) < H.Z_MAX), (s.frac, s.ref, s.z)
    assert s.sw < H.SW_FACTOR * s.floor, (s.sw, s.floor)
    err, z = H.evidence_z(res.log_evidence, float(prob.log_evidence))
    # Against the exact log p(y), a 30-step TDS evidence carries the chain's O(step)
    # discretisation gap (+0.035 / +0.040 nats for the conditional target under two engine
    # versions with different float rounding, +0.05 for the marginal one), so that check is
    # the tolerance. What rejuvenation must not do is move the evidence of the discretised
    # chain: the conditional target is exactly invariant, so with and without rejuvenation
    # the estimates agree within Monte Carlo error.
    assert abs(err) < H.EVIDENCE_TOL, (err, z)
    if target == "conditional":
        rejuv_log_z = np.asarray(res.log_evidence, np.float64)
        diff = rejuv_log_z.mean() - plain_log_z.mean()
        se = np.hypot(rejuv_log_z.std(ddof=1), plain_log_z.std(ddof=1)) / np.sqrt(H.SEEDS)
        print(f"evidence with - without rejuvenation: {diff:+.4f} +- {se:.4f}")
        assert abs(diff) < H.Z_MAX * se, (diff, se)
