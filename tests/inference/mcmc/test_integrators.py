"""Leapfrog integrator and Euclidean metric: reversibility, volume preservation, energy error
order, and the momentum / noise distributions of the metric helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.mcmc import integrators, metrics
from inference.mcmc.base import init


def _banana(x):
    """A non-Gaussian log density with a position-dependent Hessian."""
    return -0.5 * (x[0] ** 2 / 4.0 + (x[1] - 0.5 * x[0] ** 2) ** 2) - 0.5 * jnp.sum(x[2:] ** 2)


_DENSE = jnp.array([[1.0, 0.3, 0.1], [0.3, 0.5, -0.2], [0.1, -0.2, 2.0]])
_DIAG = jnp.array([1.0, 0.5, 2.0])


@pytest.mark.parametrize("inverse_mass_matrix", [_DIAG, _DENSE], ids=["diag", "dense"])
def test_leapfrog_is_reversible(inverse_mass_matrix):
    x0 = jnp.array([0.5, -0.3, 1.0])
    p0 = jnp.array([0.2, 1.0, -0.7])
    z0 = integrators.from_state(init(x0, _banana), p0)
    fwd = jax.jit(lambda z: integrators.integrate(z, _banana, 0.1, inverse_mass_matrix, 25))
    z1 = fwd(z0)
    assert float(jnp.max(jnp.abs(z1.position - x0))) > 0.1  # it moved
    back = fwd(z1._replace(momentum=-z1.momentum))
    np.testing.assert_allclose(back.position, x0, atol=1e-4)
    np.testing.assert_allclose(-back.momentum, p0, atol=1e-4)
    # Negative step size integrates backwards in time: same as flipping the momentum.
    rev = jax.jit(lambda z: integrators.integrate(z, _banana, -0.1, inverse_mass_matrix, 25))(z1)
    np.testing.assert_allclose(rev.position, x0, atol=1e-4)
    np.testing.assert_allclose(rev.momentum, p0, atol=1e-4)


@pytest.mark.parametrize("inverse_mass_matrix", [_DIAG, _DENSE], ids=["diag", "dense"])
def test_leapfrog_preserves_volume_and_is_symplectic(inverse_mass_matrix):
    with jax.enable_x64(True):
        inv = jnp.asarray(inverse_mass_matrix, jnp.float64)

        def flow(xp):
            x, p = xp[:3], xp[3:]
            z = integrators.from_state(init(x, _banana), p)
            z = integrators.integrate(z, _banana, 0.3, inv, 5)
            return jnp.concatenate([z.position, z.momentum])

        xp0 = jnp.array([0.5, -0.3, 1.0, 0.2, 1.0, -0.7], jnp.float64)
        jac = jax.jit(jax.jacfwd(flow))(xp0)
        assert abs(float(jnp.linalg.det(jac)) - 1.0) < 1e-10
        # Symplectic: J^T Omega J = Omega for the canonical form Omega = [[0, I], [-I, 0]].
        eye, zero = jnp.eye(3), jnp.zeros((3, 3))
        omega = jnp.block([[zero, eye], [-eye, zero]])
        np.testing.assert_allclose(jac.T @ omega @ jac, omega, atol=1e-10)
        # ...and the map is not trivially the identity.
        assert float(jnp.max(jnp.abs(jac - jnp.eye(6)))) > 0.1


def test_energy_error_is_second_order():
    """Over a fixed integration time the energy error of leapfrog is O(eps^2): halving eps
    divides it by 4. A first-order scheme (e.g. a full instead of a half momentum step)
    would only halve it."""
    with jax.enable_x64(True):
        inv = jnp.array([1.0, 0.25, 2.0], jnp.float64)
        z0 = integrators.from_state(
            init(jnp.array([0.5, -0.3, 1.0], jnp.float64), _banana),
            jnp.array([0.2, 1.0, -0.7], jnp.float64),
        )
        h0 = integrators.hamiltonian(z0, inv)

        @jax.jit
        def max_energy_error(eps, n):
            def body(_, carry):
                z, err = carry
                z = integrators.leapfrog(z, _banana, eps, inv)
                return z, jnp.maximum(err, jnp.abs(integrators.hamiltonian(z, inv) - h0))

            return jax.lax.fori_loop(0, n, body, (z0, jnp.zeros((), jnp.float64)))[1]

        errors = [float(max_energy_error(1.0 / n, n)) for n in (20, 40, 80)]
        ratios = np.array(errors[:-1]) / np.array(errors[1:])
        np.testing.assert_allclose(ratios, 4.0, rtol=0.1)


def test_leapfrog_matches_harmonic_oscillator_formula():
    """For log pi = -x^2/2 with M^{-1} = m one step is the linear map written out by hand."""
    eps, m, x, p = 0.3, 2.0, 0.7, -0.4
    z = integrators.from_state(init(jnp.array([x]), lambda v: -0.5 * jnp.sum(v**2)), jnp.array([p]))
    z = integrators.leapfrog(z, lambda v: -0.5 * jnp.sum(v**2), eps, jnp.array([m]))
    p_half = p - 0.5 * eps * x
    x_new = x + eps * m * p_half
    p_new = p_half - 0.5 * eps * x_new
    np.testing.assert_allclose(z.position, [x_new], rtol=1e-6)
    np.testing.assert_allclose(z.momentum, [p_new], rtol=1e-6)
    np.testing.assert_allclose(z.logdensity, -0.5 * x_new**2, rtol=1e-6)


def test_kinetic_energy_and_velocity():
    p = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(metrics.kinetic_energy(p, _DIAG), 0.5 * float(p @ (_DIAG * p)))
    np.testing.assert_allclose(metrics.kinetic_energy(p, _DENSE), 0.5 * float(p @ _DENSE @ p))
    np.testing.assert_allclose(metrics.velocity(p, _DENSE), _DENSE @ p, rtol=1e-6)
    np.testing.assert_allclose(metrics.velocity(p, jnp.diag(_DENSE)), jnp.diag(_DENSE) * p)
    v = jnp.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(
        metrics.mahalanobis_inverse(v, _DENSE), v @ jnp.linalg.solve(_DENSE, v), rtol=1e-5
    )
    np.testing.assert_allclose(metrics.mahalanobis_inverse(v, _DIAG), jnp.sum(v**2 / _DIAG))
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        metrics.velocity(p, jnp.ones((3, 3, 1)))


@pytest.mark.parametrize("inverse_mass_matrix", [_DIAG, _DENSE], ids=["diag", "dense"])
def test_momentum_has_covariance_m_and_noise_has_covariance_inverse_m(inverse_mass_matrix):
    n = 20000
    keys = jax.random.split(jax.random.key(3), n)
    p = jax.jit(jax.vmap(lambda k: metrics.sample_momentum(k, inverse_mass_matrix)))(keys)
    xi = jax.jit(jax.vmap(lambda k: metrics.sample_noise(k, inverse_mass_matrix)))(keys)
    inv = np.diag(inverse_mass_matrix) if inverse_mass_matrix.ndim == 1 else inverse_mass_matrix
    inv = np.asarray(inv, np.float64)
    for draws, cov in ((p, np.linalg.inv(inv)), (xi, inv)):
        emp = np.cov(np.asarray(draws, np.float64), rowvar=False)
        # Standard error of a Gaussian sample covariance: sqrt((S_ii S_jj + S_ij^2) / n).
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
        assert np.max(np.abs(emp - cov) / se) < 4.5
