"""TDS with MALA rejuvenation after each resampling still targets the exact posterior (the
2-d case: mode masses within 4 SE over 8 seeds, within-mode SW, evidence)."""

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

    def one(key):
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
            rejuvenate=rejuv,
        )

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(3), H.SEEDS))
    x = np.asarray(res.particles["x"])
    assert np.all(np.isfinite(x))
    s = H.summarise(prob.posterior, x)
    assert np.all(np.abs(s.z) < H.Z_MAX), (s.frac, s.ref, s.z)
    assert s.sw < H.SW_FACTOR * s.floor, (s.sw, s.floor)
    err, z = H.evidence_z(res.log_evidence, float(prob.log_evidence))
    # Compared with the exact log p(y), a 30-step TDS evidence carries the chain's O(step)
    # discretisation gap: +0.035 (z = 2.7) and +0.040 (z = 4.1) nats for the conditional
    # target under two engine versions whose float rounding differs, +0.05 for the marginal
    # one (invariant for p_t psi, not for the discretised p_theta,t psi). So the check is
    # the tolerance, not a z-test against a quantity the estimator does not target; that
    # exactly invariant rejuvenation keeps the evidence unbiased for the SMC target is
    # tested on the engine (test_engine.py, Gibbs rejuvenation against the exact evidence).
    assert abs(err) < H.EVIDENCE_TOL, (err, z)
