"""Exact ground truth for composed targets of Gaussian mixtures, at any diffusion time.

Research brief for FKC/SuperDiff, Sec. 5. Every function takes mixtures (or Gaussians) and is
meant to be applied to the *noised* mixtures ``gmm.noised(sde, t)`` (means ``alpha_t mu_k``,
covariances ``alpha_t^2 S_k + sigma_t^2 I``), so the whole FKC path
``pi_t propto prod_i (q^i_t)^{c_i}`` can be checked at any ``t``, not only at the end.

* Product of Gaussians: ``prod_a N(x; mu_a, S_a) = Z N(x; m, L^{-1})`` with ``L = sum_a S_a^{-1}``,
  ``m = L^{-1} sum_a S_a^{-1} mu_a``; for two factors ``Z = N(mu_1; mu_2, S_1 + S_2)``. Hence
  ``p_1 p_2 = sum_ij pi_ij N(c_ij, C_ij)``, ``C_ij = (A_i^{-1} + B_j^{-1})^{-1}``,
  ``c_ij = C_ij (A_i^{-1} a_i + B_j^{-1} b_j)``, ``pi_ij propto w_i v_j N(a_i; b_j, A_i + B_j)``
  (:func:`product_gmm`).
* Integer ``beta``: ``p^beta`` is the ``beta``-fold product (``K^beta`` components,
  :func:`power_gmm`). Well-separated modes, any ``beta``: ``N(mu, S)^beta propto N(mu, S/beta)``
  with weight ``w^beta |S|^{(1-beta)/2} beta^{-d/2} (2 pi)^{-d(beta-1)/2}``
  (:func:`tempered_separated`).
* Geometric average of Gaussians ``N_1^{1-b} N_2^b propto N(m, L^{-1})``,
  ``L = (1-b) A^{-1} + b B^{-1}`` (must be positive definite), ``m = L^{-1}((1-b) A^{-1} a +
  b B^{-1} b)`` (:func:`geometric_gaussian`).
* Classifier-free guidance ``p_u^{1-w} p_c^w propto p_c(x) p(c|x)^{w-1}`` with
  ``p(c|x) = pi_c p_c(x) / p_u(x) <= 1``: exact rejection sampler for ``w >= 1``
  (:func:`cfg_rejection_sample`).
* 1-d quadrature of any log-density on a grid (:func:`grid_summary_1d`).

:class:`ExactDiffusionPrior` is a :class:`ppl.diffusion.DiffusionPrior` that also exposes the
exact noised log-density ``log_density(x, t)``; compositions (:mod:`ppl.compose`) use it for the
exact FKC initial importance weight and the exact start of the Itô estimator.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from inference.diffusion.sde import SDE
from models.gmm import GaussianMixture
from ppl.diffusion import DiffusionPrior

__all__ = [
    "ExactDiffusionPrior",
    "exact_prior",
    "product_gmm",
    "power_gmm",
    "tempered_separated",
    "geometric_gaussian",
    "cfg_rejection_sample",
    "grid_summary_1d",
    "prob_positive_1d",
]


class ExactDiffusionPrior(DiffusionPrior):
    """A :class:`DiffusionPrior` of a :class:`GaussianMixture` with its exact noised
    log-density ``log_density(x (..., d), t) -> (...,)`` and the mixture in ``.mixture``."""

    def __init__(self, gmm: GaussianMixture, sde: SDE, **kwargs):
        super().__init__(gmm.score_fn(sde), sde, event_shape=(gmm.dim,), **kwargs)
        self.mixture = gmm

    def log_density(self, x: Array, t) -> Array:
        return self.mixture.logpdf_t(x, t, self.sde)

    def tree_flatten(self):
        return (self.mixture,), (self.sde, self.steps, self.sampler, self.grid)

    @classmethod
    def tree_unflatten(cls, aux, params):
        """Rebuilt without ``__init__``, whose checks call the score concretely: the mixture
        may be traced here (``jit`` / ``vmap`` of a function of the prior)."""
        sde, steps, sampler, grid = aux
        (mixture,) = params
        obj = DiffusionPrior.tree_unflatten.__func__(
            cls, (mixture.score_fn(sde), sde, (mixture.dim,), steps, sampler, grid), ()
        )
        obj.mixture = mixture
        return obj


def exact_prior(gmm: GaussianMixture, sde: SDE, **kwargs) -> ExactDiffusionPrior:
    """The mixture as a diffusion prior with exact score *and* exact noised log-density."""
    return ExactDiffusionPrior(gmm, sde, **kwargs)


def _mvn_logpdf(x: Array, mean: Array, cov: Array) -> Array:
    d = x.shape[-1]
    chol = jnp.linalg.cholesky(cov)
    z = jax.scipy.linalg.solve_triangular(chol, (x - mean)[..., None], lower=True)[..., 0]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * logdet - 0.5 * d * math.log(2 * math.pi)


def product_gmm(a: GaussianMixture, b: GaussianMixture) -> tuple[GaussianMixture, Array]:
    """``a(x) b(x) = Z * gmm(x)``: the normalised product mixture and ``log Z``.

    ``K_a K_b`` components (brief Sec. 5, product of Gaussians). Apply to noised mixtures for the
    intermediate FKC product targets ``q^1_t q^2_t``.
    """
    ca, cb = a.covs, b.covs
    pa, pb = jnp.linalg.inv(ca), jnp.linalg.inv(cb)
    prec = pa[:, None] + pb[None, :]  # (Ka, Kb, d, d)
    cov = jnp.linalg.inv(prec)
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    lin = (
        jnp.einsum("aij,aj->ai", pa, a.means)[:, None]
        + jnp.einsum("bij,bj->bi", pb, b.means)[None, :]
    )
    mean = jnp.einsum("abij,abj->abi", cov, lin)
    log_pi = (
        jnp.log(a.weights)[:, None]
        + jnp.log(b.weights)[None, :]
        + _mvn_logpdf(a.means[:, None], b.means[None, :], ca[:, None] + cb[None, :])
    )
    log_z = jax.scipy.special.logsumexp(log_pi)
    d = a.dim
    out = GaussianMixture(
        jnp.exp(log_pi - log_z).reshape(-1), mean.reshape(-1, d), cov.reshape(-1, d, d)
    )
    return out, log_z


def power_gmm(gmm: GaussianMixture, beta: int) -> tuple[GaussianMixture, Array]:
    """Exact ``p^beta = Z * gmm`` for integer ``beta >= 1`` (``K^beta`` components) and
    ``log Z = log int p^beta``, by repeated :func:`product_gmm` (brief Sec. 5, item 1)."""
    if int(beta) != beta or beta < 1:
        raise ValueError(f"beta must be a positive integer, got {beta!r}")
    out, log_z = gmm, jnp.zeros(())
    for _ in range(int(beta) - 1):
        out, lz = product_gmm(out, gmm)
        log_z = log_z + lz
    return out, log_z


def tempered_separated(gmm: GaussianMixture, beta: float) -> GaussianMixture:
    """Well-separated approximation ``p^beta ~ sum_k w~_k N(mu_k, S_k / beta)``,
    ``w~_k propto w_k^beta |S_k|^{(1-beta)/2}`` (brief Sec. 5, item 2); exact in the limit of
    separated modes (1-d, w = (0.3, 0.7), +-1.5, var 0.16, beta = 3: P(x > 0) = 0.927027)."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    logdet = jnp.sum(jnp.log(gmm.evals), axis=-1)
    logw = beta * jnp.log(gmm.weights) + 0.5 * (1.0 - beta) * logdet
    return GaussianMixture(jnp.exp(logw - jnp.max(logw)), gmm.means, gmm.covs / beta)


def geometric_gaussian(
    mean1: Array, cov1: Array, mean2: Array, cov2: Array, b: float
) -> tuple[Array, Array]:
    """``N(mean1, cov1)^{1-b} N(mean2, cov2)^b propto N(m, L^{-1})`` (brief Sec. 5).

    Raises ``ValueError`` if ``L = (1-b) cov1^{-1} + b cov2^{-1}`` is not positive definite (the
    geometric target is then not normalisable)."""
    p1, p2 = np.linalg.inv(np.asarray(cov1, float)), np.linalg.inv(np.asarray(cov2, float))
    lam = (1.0 - b) * p1 + b * p2
    if np.any(np.linalg.eigvalsh(0.5 * (lam + lam.T)) <= 0):
        raise ValueError(f"geometric average with b={b} is not normalisable (precision not PD)")
    cov = np.linalg.inv(lam)
    m = cov @ ((1.0 - b) * p1 @ np.asarray(mean1, float) + b * p2 @ np.asarray(mean2, float))
    return m, cov


def cfg_rejection_sample(
    key: Array, uncond: GaussianMixture, cond_index: int, w: float, n: int, max_rounds: int = 100
) -> Array:
    """Exact draws from ``p_u^{1-w} p_c^w`` with ``p_c`` = component ``cond_index`` of ``p_u``.

    ``p_u^{1-w} p_c^w propto p_c(x) p(c|x)^{w-1}`` with ``p(c|x) = pi_c p_c(x)/p_u(x) <= 1``,
    so for ``w >= 1``: draw ``x ~ p_c``, accept with probability ``p(c|x)^{w-1}`` (brief Sec. 5).
    Works at any diffusion time via ``uncond.noised(sde, t)``. Host loop; returns ``(n, d)``.
    """
    if w < 1:
        raise ValueError(f"the rejection sampler needs guidance scale w >= 1, got {w}")
    K = uncond.num_components
    if isinstance(cond_index, bool) or not isinstance(cond_index, int | np.integer):
        raise TypeError(f"cond_index must be an integer component index; got {cond_index!r}")
    if not 0 <= cond_index < K:
        raise ValueError(
            f"cond_index must be in [0, {K}) for this {K}-component mixture; got {cond_index}"
        )
    comp = GaussianMixture(
        jnp.ones(1),
        uncond.means[cond_index : cond_index + 1],
        uncond.covs[cond_index : cond_index + 1],
    )
    out, have = [], 0
    batch = max(4 * n, 1024)
    for _ in range(max_rounds):
        key, k1, k2 = jax.random.split(key, 3)
        x = comp.sample(k1, batch)
        log_post = uncond.component_logpdf(x)[:, cond_index] - uncond.logpdf(x)
        acc = jnp.log(jax.random.uniform(k2, (batch,))) < (w - 1.0) * log_post
        xs = np.asarray(x)[np.asarray(acc)]
        out.append(xs)
        have += xs.shape[0]
        if have >= n:
            break
    else:
        raise RuntimeError(f"rejection sampler accepted only {have} of {n} in {max_rounds} rounds")
    return jnp.asarray(np.concatenate(out)[:n])


def grid_summary_1d(log_density, lo: float = -10.0, hi: float = 10.0, num: int = 200_001) -> dict:
    """Quadrature of an unnormalised 1-d log-density ``log_density(x (num, 1)) -> (num,)``.

    Returns ``{"p_pos": P(x > 0), "mean", "var", "log_z": log int exp(log_density)}``.
    """
    xs = np.linspace(lo, hi, num)
    lp = np.asarray(log_density(jnp.asarray(xs)[:, None]), float)
    mx = lp.max()
    w = np.exp(lp - mx)
    dx = xs[1] - xs[0]
    z = w.sum()
    mean = float((w * xs).sum() / z)
    return {
        "p_pos": float((w[xs > 0].sum() + 0.5 * w[xs == 0].sum()) / z),  # midpoint rule at 0
        "mean": mean,
        "var": float((w * (xs - mean) ** 2).sum() / z),
        "log_z": float(mx + np.log(z * dx)),
    }


def prob_positive_1d(gmm: GaussianMixture) -> float:
    """``P(x > 0)`` of a 1-d mixture, ``sum_k w_k Phi(mu_k / sd_k)``."""
    if gmm.dim != 1:
        raise ValueError(f"prob_positive_1d needs a 1-d mixture; this one has d = {gmm.dim}")
    sd = jnp.sqrt(gmm.evals[:, 0])
    return float(jnp.sum(gmm.weights * jax.scipy.stats.norm.cdf(gmm.means[:, 0] / sd)))
