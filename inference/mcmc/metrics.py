"""Euclidean metrics: the Gaussian kinetic energy and its helpers.

A Euclidean-Gaussian metric (Betancourt 2017, "A conceptual introduction to Hamiltonian Monte
Carlo", sec. 4.2) draws the momentum ``p ~ N(0, M)`` and has kinetic energy

.. math:: K(p) = \\tfrac12 p^\\top M^{-1} p,

so the velocity is :math:`dx/dt = \\partial K / \\partial p = M^{-1} p` (Betancourt's
:math:`p^\\sharp`, appendix A.4.2). The library parametrises the metric by the
*inverse* mass matrix :math:`M^{-1}`, which warm-up sets to an estimate of the target
covariance. It is either a vector of shape ``(d,)`` (a diagonal :math:`M^{-1}`) or a matrix of
shape ``(d, d)`` (dense); every helper branches on ``ndim`` at trace time.

The same helpers serve the random-walk and Langevin kernels, whose proposal noise is
:math:`N(0, M^{-1})`.
"""

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import Array


def check_inverse_mass_matrix(inverse_mass_matrix: Array) -> int:
    """Return ``ndim`` (1 or 2) of the inverse mass matrix, or raise ``ValueError``."""
    ndim = jnp.ndim(inverse_mass_matrix)
    if ndim not in (1, 2):
        raise ValueError(
            "inverse_mass_matrix must have shape (d,) (diagonal) or (d, d) (dense), "
            f"got shape {jnp.shape(inverse_mass_matrix)}"
        )
    return ndim


def velocity(momentum: Array, inverse_mass_matrix: Array) -> Array:
    """:math:`p^\\sharp = M^{-1} p`, the velocity :math:`\\partial K/\\partial p`."""
    if check_inverse_mass_matrix(inverse_mass_matrix) == 1:
        return inverse_mass_matrix * momentum
    return inverse_mass_matrix @ momentum


def kinetic_energy(momentum: Array, inverse_mass_matrix: Array) -> Array:
    """:math:`K(p) = \\tfrac12 p^\\top M^{-1} p` (Betancourt 2017, sec. 4.2)."""
    return 0.5 * jnp.dot(momentum, velocity(momentum, inverse_mass_matrix))


def cholesky_inverse_mass(inverse_mass_matrix: Array) -> Array:
    """A square root :math:`L` with :math:`L L^\\top = M^{-1}` (elementwise sqrt if diagonal)."""
    if check_inverse_mass_matrix(inverse_mass_matrix) == 1:
        return jnp.sqrt(inverse_mass_matrix)
    return jnp.linalg.cholesky(inverse_mass_matrix)


def sample_momentum(key: Array, inverse_mass_matrix: Array, dtype=None) -> Array:
    """Draw :math:`p \\sim N(0, M)`.

    With :math:`L L^\\top = M^{-1}` and :math:`z \\sim N(0, I)`, :math:`p = L^{-\\top} z` has
    covariance :math:`L^{-\\top} L^{-1} = (L L^\\top)^{-1} = M`; for a diagonal metric this is
    :math:`z / \\sqrt{M^{-1}}`.
    """
    d = jnp.shape(inverse_mass_matrix)[0]
    dtype = dtype or jnp.result_type(inverse_mass_matrix)
    z = jax.random.normal(key, (d,), dtype=dtype)
    chol = cholesky_inverse_mass(inverse_mass_matrix)
    if jnp.ndim(inverse_mass_matrix) == 1:
        return z / chol
    return jsl.solve_triangular(chol, z, lower=True, trans="T")


def sample_noise(key: Array, inverse_mass_matrix: Array, dtype=None) -> Array:
    """Draw :math:`\\xi \\sim N(0, M^{-1})` as :math:`L z` (the RWMH / MALA proposal noise)."""
    d = jnp.shape(inverse_mass_matrix)[0]
    dtype = dtype or jnp.result_type(inverse_mass_matrix)
    z = jax.random.normal(key, (d,), dtype=dtype)
    chol = cholesky_inverse_mass(inverse_mass_matrix)
    if jnp.ndim(inverse_mass_matrix) == 1:
        return chol * z
    return chol @ z


def mahalanobis_inverse(v: Array, inverse_mass_matrix: Array) -> Array:
    """:math:`v^\\top M v`, the squared norm of ``v`` under the covariance :math:`M^{-1}`.

    This is the quadratic form of the log density of :math:`N(\\cdot, M^{-1})`, computed with a
    triangular solve (:math:`\\|L^{-1} v\\|^2`) rather than by inverting :math:`M^{-1}`.
    """
    if check_inverse_mass_matrix(inverse_mass_matrix) == 1:
        return jnp.sum(v * v / inverse_mass_matrix)
    chol = jnp.linalg.cholesky(inverse_mass_matrix)
    w = jsl.solve_triangular(chol, v, lower=True)
    return jnp.dot(w, w)


def is_turning(p_sharp_left: Array, p_sharp_right: Array, rho: Array) -> Array:
    """Generalised no-U-turn criterion (Betancourt 2017, appendix A.4.2).

    A trajectory whose summed momentum is :math:`\\rho = \\sum_n p_n` and whose end velocities
    are :math:`p^\\sharp_-` and :math:`p^\\sharp_+` keeps expanding while
    :math:`p^\\sharp_- \\cdot \\rho > 0` and :math:`p^\\sharp_+ \\cdot \\rho > 0`; it has turned
    when either product is :math:`\\le 0`. The test is symmetric in the two ends, so a subtree
    built backwards in time is tested exactly like one built forwards.

    The dot products are over the last axis and the arguments broadcast, so ``(k, d)`` arrays
    test ``k`` (sub)trajectories at once (NUTS checks all tree levels of a leaf this way).
    """
    return (jnp.sum(p_sharp_left * rho, -1) <= 0) | (jnp.sum(p_sharp_right * rho, -1) <= 0)
