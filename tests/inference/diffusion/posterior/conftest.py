"""Shared ground truth and statistics for the diffusion posterior sampler tests.

The 2-d case: a 4-component Gaussian-mixture prior (exact noised score under the VP SDE) and
the observation ``y = x_1 + x_2 + sigma e``: two of the four modes stay plausible, with
posterior masses ~0.6 / 0.4, so a wrong mode allocation (DPS), a wrong sign or a factor 2 in a
weight shows in the mode masses and in the log-evidence.

Acceptance rules (per test, statistics over ``S >= 8`` seeds vmapped in one jit):

* mode masses: each particle is assigned to the exact posterior component of highest
  responsibility; the mean over seeds of the per-seed fractions must agree with the same
  fractions of a large exact sample, ``|z| < 4`` with the standard error from the seeds;
* log-evidence: ``|mean_s log Z_s - log p(y)| < 4 SE`` (SE from the seeds) **and** below
  ``EVIDENCE_TOL`` nats, so that a low-variance but biased estimate also fails;
* sliced Wasserstein (SW2 over 64 directions) within the heaviest mode: the mean over seeds of
  ``SW(sampler, exact)`` below ``SW_FACTOR`` times the mean of ``SW(exact, exact')`` at the
  same sample size (see :func:`summarise`).
"""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.sde import VPSDE
from models.gmm import GaussianMixture

SEEDS = 8
N = 2000
SW_FACTOR = 2.0
EVIDENCE_TOL = 0.1
Z_MAX = 4.0


def prior2d() -> GaussianMixture:
    means = jnp.array([[-3.0, -3.0], [3.0, -3.0], [-3.0, 3.0], [3.0, 3.0]])
    return GaussianMixture(jnp.array([0.4, 0.3, 0.2, 0.1]), means, jnp.full((4,), 0.5))


def mode_fractions(post: GaussianMixture, x) -> np.ndarray:
    """Fractions of ``x`` (``(..., N, d)``) per component of highest responsibility."""
    comp = np.asarray(jnp.argmax(post.component_logpdf(jnp.asarray(x)), -1))
    return np.stack([(comp == k).mean(-1) for k in range(post.num_components)], -1)


def sliced_w2(rng, x, y, num_projections=64) -> float:
    """Sliced Wasserstein-2 between equal-size numpy samples (random unit directions)."""
    u = rng.normal(size=(num_projections, x.shape[1]))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    px, py = np.sort(x @ u.T, axis=0), np.sort(y @ u.T, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def summarise(post: GaussianMixture, x, seed=2024) -> SimpleNamespace:
    """Mode-mass z-scores and the within-mode SW ratio of draws ``x`` of shape ``(S, N, d)``.

    The SW check is made *within the heaviest mode*: the particles assigned to it are compared
    with as many exact draws of that posterior component, against the floor of two independent
    exact samples of that size. (Across modes SW is dominated by the Monte Carlo error of the
    mode masses, which the z-test covers.)
    """
    x = np.asarray(x, np.float64)
    S, n, _ = x.shape
    rng = np.random.default_rng(seed)
    big = np.asarray(post.sample(jax.random.PRNGKey(seed), 100_000))
    ref_frac = mode_fractions(post, big)
    frac = mode_fractions(post, x)  # (S, K)
    se = frac.std(0, ddof=1) / np.sqrt(S) + np.sqrt(ref_frac * (1 - ref_frac) / big.shape[0])
    z = (frac.mean(0) - ref_frac) / np.maximum(se, 1e-12)
    z = np.where(np.maximum(frac.mean(0), ref_frac) < 1e-3, 0.0, z)
    k = int(np.argmax(ref_frac))
    comp = np.asarray(jnp.argmax(post.component_logpdf(jnp.asarray(x)), -1))
    mean = np.asarray(post.means[k], np.float64)
    root = np.asarray(post.evecs[k] * jnp.sqrt(post.evals[k]), np.float64)
    sw, floor = [], []
    for i in range(S):
        xs = x[i][comp[i] == k]
        e1 = mean + rng.normal(size=xs.shape) @ root.T
        e2 = mean + rng.normal(size=xs.shape) @ root.T
        sw.append(sliced_w2(rng, xs, e1))
        floor.append(sliced_w2(rng, e2, e1))
    return SimpleNamespace(
        frac=frac.mean(0),
        ref=ref_frac,
        z=z,
        sw=float(np.mean(sw)),
        floor=float(np.mean(floor)),
        se=se,
    )


def evidence_z(log_z, exact) -> tuple[float, float]:
    log_z = np.asarray(log_z, np.float64)
    err = float(log_z.mean() - exact)
    se = float(log_z.std(ddof=1) / np.sqrt(log_z.size))
    return err, err / max(se, 1e-6)


def grid_posterior(prior: GaussianMixture, log_lik, lim=8.0, n=801):
    """The 2-d posterior ``prior(x) exp(log_lik(x))`` on an ``n x n`` grid over
    ``[-lim, lim]^2``: the points, their normalised weights and ``log p(y)`` (Riemann sum)."""
    g = np.linspace(-lim, lim, n)
    pts = np.stack([a.ravel() for a in np.meshgrid(g, g, indexing="ij")], -1)
    log_w = np.asarray(prior.logpdf(jnp.asarray(pts)), np.float64)
    log_w += np.asarray(jax.vmap(log_lik)(jnp.asarray(pts)), np.float64)
    top = log_w.max()
    w = np.exp(log_w - top)
    log_z = top + np.log(w.sum() * (g[1] - g[0]) ** 2)
    return pts, w / w.sum(), float(log_z)


def grid_feature_z(feats, pts, w, x) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-seed means of ``feats`` over draws ``x`` (``(S, N, 2)``) against their grid
    expectations: ``(mean over seeds, exact, z)`` with the SE from the seeds."""
    exact = (w[:, None] * feats(pts)).sum(0)
    per_seed = feats(np.asarray(x, np.float64)).mean(1)
    se = per_seed.std(0, ddof=1) / np.sqrt(per_seed.shape[0])
    return per_seed.mean(0), exact, (per_seed.mean(0) - exact) / se


@pytest.fixture(scope="session")
def case2d():
    sde = VPSDE()
    prior = prior2d()
    A = jnp.array([[1.0, 1.0]])
    y = jnp.array([0.3])
    return SimpleNamespace(sde=sde, prior=prior, A=A, y=y, score_fn=prior.score_fn(sde))


@pytest.fixture(scope="session")
def H():
    """The helpers and constants above, for the test modules (importlib import mode)."""
    return SimpleNamespace(
        SEEDS=SEEDS,
        N=N,
        SW_FACTOR=SW_FACTOR,
        EVIDENCE_TOL=EVIDENCE_TOL,
        Z_MAX=Z_MAX,
        summarise=summarise,
        evidence_z=evidence_z,
        mode_fractions=mode_fractions,
        grid_posterior=grid_posterior,
        grid_feature_z=grid_feature_z,
    )
