"""MCGdiff, TDS and AFDPS on the MCGdiff-benchmark prior (25 unit-covariance modes on
a 5x5 grid of spacing 8) in d = 8 and 80, all under ``slow`` (the default suite checks every
sampler in d = 2: ``test_mcgdiff.py``, ``test_tds.py``, ``test_afdps.py``, ``test_dps.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.posterior.afdps import sample_afdps
from inference.diffusion.posterior.mcgdiff import sample_mcgdiff
from inference.diffusion.posterior.tds import gaussian_twist, sample_tds
from inference.diffusion.sde import VPSDE
from models import gmm_posterior as gp
from models.gmm import GaussianMixture

SDE = VPSDE()


def benchmark_problem(d, d_y, seed):
    """The paper's protocol (weights ∝ eps^2, A with U(0,1) singular values,
    sigma = u max(s)), with ``u`` drawn in (0.2, 1) so the tests stay away from sigma ~ 0."""
    key = jax.random.PRNGKey(seed)
    kw, k1, k2, k3, k4, k5, k6 = jax.random.split(key, 7)
    ij = jnp.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], jnp.float32)
    means = 8.0 * jnp.tile(ij, (1, d // 2))
    w = jax.random.normal(kw, (25,)) ** 2
    prior = GaussianMixture(w, means, jnp.ones((25,)))
    U, _, Vt = jnp.linalg.svd(jax.random.normal(k1, (d_y, d)), full_matrices=False)
    s = -jnp.sort(-jax.random.uniform(k2, (d_y,)))
    A = U @ jnp.diag(s) @ Vt
    sigma = float(jax.random.uniform(k3, minval=0.2, maxval=1.0) * s[0])
    x_star = prior.sample(k4, 1)[0]
    y = A @ x_star + sigma * jax.random.normal(k5, (d_y,))
    del k6
    return prior, A, y, sigma


def _check(method, d, d_y, seed, H, steps=100, sw_factor=None, evidence_range=None):
    """Mode masses (|z| < 4), within-mode SW below ``sw_factor`` (default ``H.SW_FACTOR``) times
    the floor, and the evidence: within ``H.EVIDENCE_TOL`` and 4 SE, or inside
    ``evidence_range`` where a sampler's measured discretisation bias is larger."""
    prior, A, y, sigma = benchmark_problem(d, d_y, seed)
    score_fn = prior.score_fn(SDE)
    prob = gp.LinearGaussianGMMProblem(prior, A, y, sigma)

    def one(key):
        if method == "mcgdiff":
            return sample_mcgdiff(key, score_fn, SDE, A, y, sigma, H.N, steps)
        if method == "afdps":  # the likelihood scale of ppl.smc, 0.5 sigma / |A|_2
            lap = -jnp.sum(A**2) / sigma**2
            scale = 0.5 * sigma / jnp.linalg.norm(A, 2)
            return sample_afdps(
                key,
                score_fn,
                SDE,
                prob.log_likelihood,
                d,
                H.N,
                steps,
                lambda x: lap,
                (A, y, sigma),
                likelihood_scale=scale,
            )
        tw = gaussian_twist(SDE, A, y, sigma)
        return sample_tds(key, score_fn, SDE, prob.log_likelihood, d, H.N, steps, log_twist_fn=tw)

    res = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(seed), H.SEEDS))
    x = res.particles["x"] if isinstance(res.particles, dict) else res.particles
    s = H.summarise(prob.posterior, np.asarray(x))
    assert np.all(np.abs(s.z) < H.Z_MAX), (s.frac[s.ref > 0.01], s.ref[s.ref > 0.01], s.z)
    assert s.sw < (sw_factor or H.SW_FACTOR) * s.floor, (s.sw, s.floor)
    err, z = H.evidence_z(res.log_evidence, float(prob.log_evidence))
    if evidence_range is None:
        assert abs(err) < H.EVIDENCE_TOL and abs(z) < H.Z_MAX, (err, z)
    else:
        assert evidence_range[0] < err < evidence_range[1], err


@pytest.mark.slow
def test_tds_d8_two_observations(H):
    _check("tds", 8, 2, 11, H)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mcgdiff", "tds"])
@pytest.mark.parametrize("d, d_y", [(8, 1), (8, 4), (80, 1), (80, 2)])
def test_highdim_slow(method, d, d_y, H):
    # d = 80: 100 uniform steps misallocate mode masses through the time discretisation of the
    # model prior itself (z up to 12 for TDS even with the exact twist; tds.py docstring)
    _check(method, d, d_y, 100 + d + d_y, H, steps=400 if d >= 80 else 100)


@pytest.mark.slow
@pytest.mark.parametrize("d, d_y", [(8, 1), (8, 4), (80, 2)])
def test_afdps_rescaled_finds_the_modes_slow(d, d_y, H):
    """AFDPS with its default (rescaled) potential puts the right mass in the right modes where
    the paper's noisy-state potential put every particle in a mode of posterior mass ~0 (the
    d_y = 4 problem; module docstring). Looser than MCGdiff / TDS on the rest, by measurement
    (400 steps, 8 seeds x 2000): mode-mass |z| <= 0.4; within-mode SW 1.52 / 2.19 x the floor
    (the particles of one run are correlated: the per-seed mean varies 3-4x more than for
    independent draws, so a run's cloud is offset by ~0.1); evidence +0.24 / +0.19 nats, the
    O(du) bias (+0.07 / +0.13 at 1600 steps). d = 80, d_y = 2: |z| <= 0.1, SW 1.43 x, -0.012."""
    _check("afdps", d, d_y, 100 + d + d_y, H, steps=400, sw_factor=3.0, evidence_range=(-0.1, 0.4))
