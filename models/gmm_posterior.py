"""Exact posterior of a Gaussian-mixture prior under a linear-Gaussian observation.

Prior ``pi(x) = sum_k w_k N(x; mu_k, S_k)``, observation ``y = A x + e``, ``e ~ N(0, R)`` with
``R = sigma^2 I`` (``sigma`` a scalar or a ``(d_y,)`` vector of per-coordinate scales; ``sigma = 0``
is the noiseless case). Everything below is closed form (see e.g. Bishop 2006, PRML eqs.
2.113-2.117, applied per component; Cardoso et al. 2024, "Monte Carlo guided diffusion for
Bayesian linear inverse problems", ICLR, App. on the GMM experiment):

* posterior ``pi(x | y) = sum_k w~_k N(x; m_k, C_k)`` with (Woodbury form)
  ``G_k = A S_k A^T + R``, ``m_k = mu_k + S_k A^T G_k^{-1} (y - A mu_k)``,
  ``C_k = S_k - S_k A^T G_k^{-1} A S_k``, ``w~_k ∝ w_k N(y; A mu_k, G_k)``;
* evidence ``log p(y) = logsumexp_k [log w_k + log N(y; A mu_k, G_k)]``;
* under a forward SDE with ``x_t | x_0 ~ N(a_t x_0, s_t^2 I)`` the noised posterior is
  ``p_t(x_t | y) = sum_k w~_k N(x_t; a_t m_k, a_t^2 C_k + s_t^2 I)``;
* the exact ("optimal") twist of twisted SMC (Wu et al. 2023, NeurIPS, Sec. 3.1),
  ``p(y | x_t) = sum_k r_k(x_t) N(y; A m_k(x_t), A V_k A^T + R)`` with the denoising-posterior
  component moments ``m_k(x_t) = mu_k + a S_k P_k^{-1} (x_t - a mu_k)``,
  ``V_k = S_k - a^2 S_k P_k^{-1} S_k``, ``P_k = a^2 S_k + s^2 I`` and responsibilities
  ``r_k(x_t) ∝ w_k N(x_t; a mu_k, P_k)``.

The identity ``p(y | x_t) = p_t(x_t | y) p(y) / p_t(x_t)`` links the last three and is what the
tests check.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import Array

from inference.diffusion.sde import SDE
from models.gmm import GaussianMixture

__all__ = [
    "noise_cov",
    "posterior",
    "log_evidence",
    "noised_posterior",
    "log_twist",
    "LinearGaussianGMMProblem",
]


def noise_cov(sigma, d_y: int, dtype=None) -> Array:
    """``R = diag(sigma^2)`` from a scalar or ``(d_y,)`` ``sigma``."""
    sigma = jnp.asarray(sigma, dtype=dtype)
    return jnp.diag(jnp.broadcast_to(sigma**2, (d_y,)))


def _mvn_logpdf(x: Array, mean: Array, cov: Array) -> Array:
    chol = jnp.linalg.cholesky(cov)
    z = jax.scipy.linalg.solve_triangular(chol, x - mean, lower=True)
    return (
        -0.5 * jnp.sum(z**2, axis=-1)
        - jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    )


@jax.jit
def _component_terms(prior: GaussianMixture, A: Array, y: Array, sigma):
    """``(log w_k + log N(y; A mu_k, G_k), m_k, C_k)``, compiled as one program."""
    A = jnp.asarray(A, prior.means.dtype)
    y = jnp.asarray(y, prior.means.dtype)
    R = noise_cov(sigma, A.shape[0], prior.means.dtype)
    S = prior.covs
    G = jnp.einsum("ij,kjl,ml->kim", A, S, A) + R  # (K, dy, dy)
    resid = y - prior.means @ A.T  # (K, dy)
    log_comp = jnp.log(prior.weights) + jax.vmap(_mvn_logpdf, (None, 0, 0))(y, prior.means @ A.T, G)
    SAt = jnp.einsum("kij,lj->kil", S, A)  # (K, d, dy)
    gain = jnp.linalg.solve(G, jnp.swapaxes(SAt, -1, -2))  # (K, dy, d) = G^{-1} A S
    means = prior.means + jnp.einsum(
        "kil,kl->ki", SAt, jnp.linalg.solve(G, resid[..., None])[..., 0]
    )
    covs = S - jnp.einsum("kil,klj->kij", SAt, gain)
    covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))
    return log_comp, means, covs


@jax.jit
def _mixture(log_w: Array, means: Array, covs: Array) -> GaussianMixture:
    """Build a mixture without re-normalisation issues; negative round-off eigenvalues of
    (noiseless, rank-deficient) covariances are clipped to zero so that sampling works."""
    w = jax.nn.softmax(log_w)
    evals, evecs = jnp.linalg.eigh(covs)
    obj = object.__new__(GaussianMixture)
    obj.weights = w
    obj.means = means
    obj.evals = jnp.maximum(evals, 0.0)
    obj.evecs = evecs
    return obj


def posterior(prior: GaussianMixture, A, y, sigma) -> GaussianMixture:
    """Exact posterior mixture ``pi(x | y)`` (module docstring). ``sigma = 0`` gives the
    noiseless posterior (degenerate covariances: it can be sampled but has no density)."""
    log_comp, means, covs = _component_terms(prior, A, y, sigma)
    return _mixture(log_comp, means, covs)


def log_evidence(prior: GaussianMixture, A, y, sigma) -> Array:
    """Exact ``log p(y) = logsumexp_k [log w_k + log N(y; A mu_k, A S_k A^T + R)]``."""
    log_comp, _, _ = _component_terms(prior, A, y, sigma)
    return jax.scipy.special.logsumexp(log_comp)


def noised_posterior(prior: GaussianMixture, sde: SDE, t, A, y, sigma) -> GaussianMixture:
    """``p_t(x_t | y) = sum_k w~_k N(x_t; a_t m_k, a_t^2 C_k + s_t^2 I)``."""
    log_comp, means, covs = _component_terms(prior, A, y, sigma)
    a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
    d = means.shape[-1]
    return _mixture(log_comp, a * means, a**2 * covs + s**2 * jnp.eye(d, dtype=means.dtype))


def log_twist(prior: GaussianMixture, sde: SDE, t, A, y, sigma, x_t: Array) -> Array:
    """Exact ``log p(y | x_t)`` (the optimal twist), ``x_t`` of shape ``(..., d)``."""
    A = jnp.asarray(A, prior.means.dtype)
    y = jnp.asarray(y, prior.means.dtype)
    a, s = sde.marginal_mean_coeff(t), sde.marginal_std(t)
    S = prior.covs
    d = prior.dim
    P = a**2 * S + s**2 * jnp.eye(d, dtype=S.dtype)
    SPinv = jnp.swapaxes(jnp.linalg.solve(P, S), -1, -2)  # S P^{-1} (P, S symmetric)
    V = S - a**2 * SPinv @ S
    R = noise_cov(sigma, A.shape[0], S.dtype)
    cov_y = jnp.einsum("ij,kjl,ml->kim", A, V, A) + R
    noised = prior.noised(sde, t)
    resp = jax.nn.log_softmax(noised.component_logpdf(x_t), axis=-1)  # (..., K)
    diff = jnp.asarray(x_t)[..., None, :] - a * prior.means  # (..., K, d)
    m = prior.means + a * jnp.einsum("kij,...kj->...ki", SPinv, diff)
    my = m @ A.T  # (..., K, dy)
    chol = jnp.linalg.cholesky(cov_y)  # (K, dy, dy)
    r = y - my
    z = jax.vmap(
        lambda L, rk: jax.scipy.linalg.solve_triangular(L, rk.T, lower=True).T,
        in_axes=(0, -2),
        out_axes=-2,
    )(chol, r)
    logdet = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    log_n = -0.5 * jnp.sum(z**2, -1) - logdet - 0.5 * A.shape[0] * math.log(2 * math.pi)
    return jax.scipy.special.logsumexp(resp + log_n, axis=-1)


class LinearGaussianGMMProblem:
    """A GMM prior with a linear-Gaussian observation, bundling the exact answers."""

    def __init__(self, prior: GaussianMixture, A, y, sigma):
        self.prior = prior
        self.A = jnp.asarray(A, prior.means.dtype)
        self.y = jnp.asarray(y, prior.means.dtype)
        self.sigma = sigma

    @property
    def posterior(self) -> GaussianMixture:
        return posterior(self.prior, self.A, self.y, self.sigma)

    @property
    def log_evidence(self) -> Array:
        return log_evidence(self.prior, self.A, self.y, self.sigma)

    def log_likelihood(self, x: Array) -> Array:
        """``log N(y; A x, sigma^2 I)`` for ``x`` of shape ``(..., d)`` (``sigma > 0``)."""
        sig = jnp.broadcast_to(jnp.asarray(self.sigma, self.A.dtype), self.y.shape)
        r = (self.y - jnp.asarray(x) @ self.A.T) / sig
        return jnp.sum(-0.5 * r**2 - jnp.log(sig) - 0.5 * math.log(2 * math.pi), axis=-1)

    def log_twist(self, sde: SDE, t, x_t: Array) -> Array:
        return log_twist(self.prior, sde, t, self.A, self.y, self.sigma, x_t)

    def noised_posterior(self, sde: SDE, t) -> GaussianMixture:
        return noised_posterior(self.prior, sde, t, self.A, self.y, self.sigma)
