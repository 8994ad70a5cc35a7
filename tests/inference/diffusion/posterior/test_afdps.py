"""AFDPS (SDE variant) against the exact GMM posterior and evidence: the rescaled potential (the
default) and the paper's Algorithm 1 (the likelihood of the noisy state)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.posterior.afdps import sample_afdps
from models import gmm_posterior as gp

SIGMA = 1.0


def _run(case2d, prob, steps, num_particles, seeds, potential="rescaled"):
    """AFDPS on the 2-d case for ``seeds`` keys (vmapped in one jit), exact Gaussian start, the
    likelihood scale ``ppl.smc`` uses (``0.5 sigma / |A|_2``)."""
    lap = -float(jnp.sum(case2d.A**2)) / SIGMA**2
    scale = 0.5 * SIGMA / float(jnp.linalg.norm(case2d.A, 2))

    def one(key):
        return sample_afdps(
            key,
            case2d.score_fn,
            case2d.sde,
            prob.log_likelihood,
            2,
            num_particles,
            steps,
            laplacian_fn=lambda x: lap,
            gaussian=(case2d.A, case2d.y, SIGMA),
            potential=potential,
            likelihood_scale=scale,
        )

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(4), seeds))


def _problem(case2d):
    return gp.LinearGaussianGMMProblem(case2d.prior, case2d.A, case2d.y, SIGMA)


def _check_posterior(prob, res, H):
    s = H.summarise(prob.posterior, res.particles["x"])
    assert np.all(np.abs(s.z) < H.Z_MAX), (s.frac, s.ref, s.z)
    assert s.sw < H.SW_FACTOR * s.floor, (s.sw, s.floor)


def test_afdps_matches_exact_posterior_and_evidence(case2d, H):
    """Rescaled potential, 400 steps: mode masses, within-mode SW and log p(y) (measured
    -0.003 +- 0.015; the paper's potential is +0.3 nats off here)."""
    prob = _problem(case2d)
    res = _run(case2d, prob, 400, H.N, H.SEEDS)
    _check_posterior(prob, res, H)
    err, z = H.evidence_z(res.log_evidence, float(prob.log_evidence))
    assert abs(err) < H.EVIDENCE_TOL and abs(z) < H.Z_MAX, (err, z)


@pytest.mark.slow
def test_paper_afdps_matches_exact_posterior(case2d, H):
    prob = _problem(case2d)
    _check_posterior(prob, _run(case2d, prob, 400, H.N, H.SEEDS, potential="noisy"), H)


def _evidence_errors(case2d, prob, steps, num_particles, seeds, potential):
    log_z = _run(case2d, prob, steps, num_particles, seeds, potential).log_evidence
    return np.asarray(log_z, np.float64) - float(prob.log_evidence)


def _assert_bias_shrinks(coarse, fine):
    se_c, se_f = (e.std(ddof=1) / np.sqrt(e.size) for e in (coarse, fine))
    assert coarse.mean() > 4 * se_c, (coarse.mean(), se_c)
    assert coarse.mean() - fine.mean() > 4 * np.hypot(se_c, se_f), (coarse.mean(), fine.mean())
    assert abs(fine.mean()) < 0.5 * coarse.mean(), (coarse.mean(), fine.mean())


@pytest.mark.slow
def test_paper_afdps_log_evidence_bias_shrinks_with_steps(case2d):
    """With the paper's potential the evidence is consistent only as du -> 0: its left-point
    Euler-Maruyama weight has an O(du) bias (module docstring, 'Evidence estimate'). With
    N = 8000 over 16 seeds the error is large and positive at 100 steps (measured +1.98 +- 0.14)
    and shrinks at 400 (+0.37 +- 0.17); a wrong sign or a missing term in c would not shrink."""
    prob = _problem(case2d)
    _assert_bias_shrinks(
        _evidence_errors(case2d, prob, 100, 8000, 16, "noisy"),
        _evidence_errors(case2d, prob, 400, 8000, 16, "noisy"),
    )


@pytest.mark.slow
def test_rescaled_log_evidence_bias_is_small_and_shrinks_with_steps(case2d):
    """With the rescaled potential the same O(du) bias is far smaller: with N = 16000 over 16
    seeds, measured +0.339 +- 0.003 at 25 steps and +0.058 +- 0.003 at 100 (the paper's
    potential: +1.62 at 100)."""
    prob = _problem(case2d)
    coarse = _evidence_errors(case2d, prob, 25, 16000, 16, "rescaled")
    fine = _evidence_errors(case2d, prob, 100, 16000, 16, "rescaled")
    _assert_bias_shrinks(coarse, fine)
    assert abs(fine.mean()) < 0.1, fine.mean()


@pytest.mark.slow
def test_afdps_logistic_observation_matches_grid(case2d, H):
    """A nonlinear, smooth likelihood (``y = 1 ~ Bernoulli(sigmoid(x1 - x2 / 2))``) with the
    Hessian-trace Laplacian and ``ppl.smc``'s default scale 0.5, against a grid posterior:
    measured |z| <= 1.1 on P(x1 > 0), P(x2 > 0), E x1, E x2 and evidence +0.005 (z 1.0). (A
    likelihood with a kink, ``N(y; |x1|, 1)``, is not twice differentiable: the autodiff
    Laplacian misses the delta at ``x1 = 0`` and the evidence came out -0.20 nats off.)"""
    w = jnp.array([1.0, -0.5])

    def log_lik(x):
        return jax.nn.log_sigmoid(jnp.dot(w, x))

    def one(key):
        return sample_afdps(
            key, case2d.score_fn, case2d.sde, log_lik, 2, H.N, 400, likelihood_scale=0.5
        )

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(2), H.SEEDS))
    pts, w, log_z = H.grid_posterior(case2d.prior, log_lik)

    def feats(z):
        return np.stack([z[..., 0] > 0, z[..., 1] > 0, z[..., 0], z[..., 1]], -1)

    mean, exact, z = H.grid_feature_z(feats, pts, w, res.particles["x"])
    assert np.all(np.abs(z) < H.Z_MAX), (mean, exact, z)
    err, zz = H.evidence_z(res.log_evidence, log_z)
    assert abs(err) < H.EVIDENCE_TOL and abs(zz) < H.Z_MAX, (err, zz)
