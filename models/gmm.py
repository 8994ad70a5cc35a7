"""Gaussian mixtures with exact noised marginals and scores under any forward SDE.

``p_0(x) = sum_k w_k N(x; mu_k, S_k)``. Under a linear SDE with ``x_t | x_0 ~ N(alpha_t x_0,
sigma_t^2 I)`` the marginal stays a mixture (Song et al. 2021 eq. 29 convolved with each
component):

    p_t(x) = sum_k w_k N(x; alpha_t mu_k, C_k(t)),   C_k(t) = alpha_t^2 S_k + sigma_t^2 I,
    grad log p_t(x) = -sum_k r_k(x) C_k(t)^{-1} (x - alpha_t mu_k),

with responsibilities ``r_k(x) = softmax_k[log w_k + log N(x; alpha_t mu_k, C_k(t))]``. This is
the ground truth every diffusion sampler and likelihood in :mod:`inference.diffusion` is tested
against. The class is a registered pytree, so it can be passed through ``jax.jit``/``vmap``.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from inference import rng
from inference.diffusion.sde import SDE

__all__ = ["GaussianMixture"]


def _check_t(sde: SDE, t) -> None:
    if jnp.ndim(t) != 0:
        raise ValueError(
            f"t must be one time (a scalar) for the noised mixture; got shape {jnp.shape(t)} "
            "(for a time per particle, jax.vmap over (x, t))"
        )
    try:
        arr = np.asarray(t)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if arr.size == 0:
        return
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > sde.t_max * (1 + 1e-6):
        raise ValueError(f"t must lie in [0, t_max={sde.t_max}] for the noised mixture; got {t}")


def _check_concrete_parameters(weights: Array, evals: Array) -> None:
    """Weights ``>= 0`` with a positive finite sum, covariances positive definite; skipped for
    traced parameters (a mixture built inside ``jit``)."""
    try:
        w, lam = np.asarray(weights), np.asarray(evals)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError(f"weights must be finite, >= 0 and not all zero; got {w}")
    if not (np.all(np.isfinite(lam)) and np.all(lam > 0)):
        bad = sorted({int(k) for k in np.nonzero(~(lam > 0) | ~np.isfinite(lam))[0]})
        raise ValueError(
            f"covs must be positive definite (finite); component(s) {bad} have eigenvalues "
            f"{lam[bad].tolist()}"
        )


# The mixture's eager entry points (construction, sampling, densities) each run as one compiled
# program: op by op, every jnp call would be its own XLA compilation (tens of them per call,
# ~50 ms each on a CPU). Inside a traced function the jit is inlined.


@partial(jax.jit, static_argnums=2)
def _normalise_and_decompose(weights: Array, covs: Array, d: int):
    """``(w / sum w, eigenvalues, eigenvectors)`` of ``(K,)``, ``(K, d)`` or ``(K, d, d)`` covs."""
    if covs.ndim == 1:
        covs = covs[:, None, None] * jnp.eye(d, dtype=covs.dtype)
    elif covs.ndim == 2:
        covs = jax.vmap(jnp.diag)(covs)
    evals, evecs = jnp.linalg.eigh(covs)
    return weights / jnp.sum(weights), evals, evecs


@jax.jit
def _component_logpdf(mix: GaussianMixture, x: Array) -> Array:
    """``log w_k - |Lambda_k^{-1/2} U_k^T (x - mu_k)|^2 / 2 - log det S_k / 2 - d log(2 pi) / 2``
    (``S_k = U_k Lambda_k U_k^T``)."""
    z = mix._whiten(x)
    quad = jnp.sum(z**2 / mix.evals, axis=-1)
    logdet = jnp.sum(jnp.log(mix.evals), axis=-1)
    return jnp.log(mix.weights) - 0.5 * quad - 0.5 * logdet - 0.5 * mix.dim * math.log(2 * math.pi)


@partial(jax.jit, static_argnums=2)
def _sample(mix: GaussianMixture, key: Array, n: int) -> Array:
    """``x = mu_c + U_c Lambda_c^{1/2} z`` with ``c ~ Categorical(w)``, ``z ~ N(0, I)``."""
    k1, k2 = jax.random.split(key)
    comp = jax.random.categorical(k1, jnp.log(mix.weights), shape=(n,))
    z = rng.normal(k2, (n, mix.dim), dtype=mix.means.dtype)
    root = mix.evecs[comp] * jnp.sqrt(mix.evals[comp])[:, None, :]
    return mix.means[comp] + jnp.einsum("nij,nj->ni", root, z)


@jax.tree_util.register_pytree_node_class
class GaussianMixture:
    """Mixture ``sum_k w_k N(mu_k, S_k)`` in ``d`` dimensions.

    Args:
        weights: ``(K,)`` non-negative mixture weights (normalised here).
        means: ``(K, d)`` component means.
        covs: ``(K, d, d)`` covariances, or ``(K, d)`` diagonal variances, or ``(K,)`` isotropic
            variances.
    """

    def __init__(self, weights, means, covs):
        # one floating dtype for all three (integer means used to cast the weights to 0)
        means, weights, covs = jnp.asarray(means), jnp.asarray(weights), jnp.asarray(covs)
        dtype = jnp.result_type(means, weights, covs, float)
        means = means.astype(dtype)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d); got {means.shape}")
        K, d = means.shape
        weights = weights.astype(dtype)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},); got {weights.shape}")
        covs = covs.astype(dtype)
        if covs.shape not in ((K,), (K, d), (K, d, d)):
            raise ValueError(f"covs must have shape ({K}, {d}, {d}), ({K}, {d}) or ({K},)")
        self.weights, self.evals, self.evecs = _normalise_and_decompose(weights, covs, d)
        self.means = means
        _check_concrete_parameters(weights, self.evals)

    # pytree protocol ---------------------------------------------------------------------
    def tree_flatten(self):
        return (self.weights, self.means, self.evals, self.evecs), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.weights, obj.means, obj.evals, obj.evecs = children
        return obj

    # basic properties ---------------------------------------------------------------------
    @property
    def covs(self) -> Array:
        """``(K, d, d)`` component covariances ``S_k = U_k diag(lambda_k) U_k^T``."""
        return jnp.einsum("kij,kj,klj->kil", self.evecs, self.evals, self.evecs)

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def mean(self) -> Array:
        """Mixture mean ``sum_k w_k mu_k``."""
        return self.weights @ self.means

    @property
    def cov(self) -> Array:
        """Mixture covariance ``sum_k w_k (S_k + mu_k mu_k^T) - m m^T``."""
        m = self.mean
        second = jnp.einsum("k,kij->ij", self.weights, self.covs) + jnp.einsum(
            "k,ki,kj->ij", self.weights, self.means, self.means
        )
        return second - jnp.outer(m, m)

    def _whiten(self, x: Array) -> Array:
        """``U_k^T (x - mu_k)`` for every component: ``(..., d) -> (..., K, d)``."""
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.dim,):
            raise ValueError(
                f"x must have shape (..., {self.dim}) for this {self.dim}-d mixture; got {x.shape}"
            )
        diff = x[..., None, :] - self.means
        return jnp.einsum("kji,...kj->...ki", self.evecs, diff)

    def component_logpdf(self, x: Array) -> Array:
        """``log w_k + log N(x; mu_k, S_k)`` for ``x`` of shape ``(..., d)`` -> ``(..., K)``."""
        return _component_logpdf(self, jnp.asarray(x))

    def logpdf(self, x: Array) -> Array:
        """``log p(x)`` for ``x`` of shape ``(..., d)``."""
        return jax.scipy.special.logsumexp(self.component_logpdf(x), axis=-1)

    def score0(self, x: Array) -> Array:
        """``grad log p(x) = -sum_k r_k(x) S_k^{-1} (x - mu_k)``, shape ``(..., d)``."""
        z = self._whiten(x)
        quad = jnp.sum(z**2 / self.evals, axis=-1)
        logdet = jnp.sum(jnp.log(self.evals), axis=-1)
        r = jax.nn.softmax(jnp.log(self.weights) - 0.5 * quad - 0.5 * logdet, axis=-1)
        return -jnp.einsum("...k,kij,...kj->...i", r, self.evecs, z / self.evals)

    def sample(self, key: Array, n: int) -> Array:
        """``n`` exact draws, shape ``(n, d)``."""
        return _sample(self, key, int(n))

    # noised marginals ---------------------------------------------------------------------
    def noised(self, sde: SDE, t) -> GaussianMixture:
        """Exact marginal ``p_t``: means ``alpha_t mu_k``, covs ``alpha_t^2 S_k + sigma_t^2 I``."""
        _check_t(sde, t)
        a = sde.marginal_mean_coeff(t)
        s = sde.marginal_std(t)
        obj = object.__new__(GaussianMixture)
        obj.weights = self.weights
        obj.means = a * self.means
        obj.evals = a**2 * self.evals + s**2
        obj.evecs = self.evecs
        return obj

    def logpdf_t(self, x: Array, t, sde: SDE) -> Array:
        """``log p_t(x)`` of the noised mixture."""
        return self.noised(sde, t).logpdf(x)

    def score(self, x: Array, t, sde: SDE) -> Array:
        """Exact noised score ``grad_x log p_t(x)``; ``x`` of shape ``(..., d)``."""
        return self.noised(sde, t).score0(x)

    def score_fn(self, sde: SDE):
        """``score_fn(x, t) -> grad log p_t(x)`` in the batch convention of the samplers."""

        def score_fn(x, t):
            return self.score(x, t, sde)

        return score_fn

    def diffusion_prior(self, sde: SDE, **kwargs):
        """A :class:`ppl.diffusion.DiffusionPrior` with this mixture's exact noised score."""
        from ppl.diffusion import DiffusionPrior

        return DiffusionPrior(self.score_fn(sde), sde, event_shape=(self.dim,), **kwargs)
