"""Ready-made state-space models: exact Kalman filter / RTS smoother and simulators."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from models.state_space import LinearGaussian, StochasticVolatility
from ppl.state_space import StateSpaceModel

A = np.array([[0.9, 0.2], [-0.1, 0.8]])
C = np.array([[1.0, 0.5]])
Q = np.array([[0.3, 0.1], [0.1, 0.2]])
R = np.array([[0.4]])
M0 = np.array([0.5, -0.5])
P0 = np.array([[1.0, 0.3], [0.3, 2.0]])


def dense_joint(T):
    """Mean and covariance of (y_0, ..., y_{T-1}) by brute force: x_t = A^t x_0 + sum ..."""
    dx = 2
    # covariance of the stacked states
    means = [M0]
    covs = {(0, 0): P0}
    for t in range(1, T):
        means.append(A @ means[-1])
        covs[(t, t)] = A @ covs[(t - 1, t - 1)] @ A.T + Q
    for s in range(T):
        for t in range(s + 1, T):
            covs[(t, s)] = np.linalg.matrix_power(A, t - s) @ covs[(s, s)]
            covs[(s, t)] = covs[(t, s)].T
    Sx = np.block([[covs[(s, t)] for t in range(T)] for s in range(T)])
    Cb = np.kron(np.eye(T), C)
    Sy = Cb @ Sx @ Cb.T + np.kron(np.eye(T), R)
    return Cb @ np.concatenate(means), Sy, dx


def test_kalman_loglik_matches_dense_gaussian():
    with jax.enable_x64(True):
        lg = LinearGaussian(A, C, Q, R, M0, P0)
        _, ys = lg.simulate(jax.random.key(0), 8)
        kf = lg.kalman_filter(ys)
        mean, cov, _ = dense_joint(8)
        exact = stats.multivariate_normal(mean, cov).logpdf(np.asarray(ys).ravel())
        assert np.isclose(float(kf.log_likelihood), exact, rtol=1e-10)
        # filtering mean at the last step = conditional mean of x_T given all ys (dense)
        assert kf.means.shape == (8, 2) and kf.covs.shape == (8, 2, 2)


def test_kalman_filter_and_smoother_against_conditioning():
    """E[x_t | y_{0:T-1}] from the RTS smoother equals Gaussian conditioning of the joint."""
    with jax.enable_x64(True):
        T = 6
        lg = LinearGaussian(A, C, Q, R, M0, P0)
        _, ys = lg.simulate(jax.random.key(1), T)
        ys = np.asarray(ys)
        # joint of (x_{0:T-1}, y_{0:T-1})
        means = [M0]
        for _ in range(1, T):
            means.append(A @ means[-1])
        mx = np.concatenate(means)
        covs = np.zeros((2 * T, 2 * T))
        Pt = [P0]
        for _ in range(1, T):
            Pt.append(A @ Pt[-1] @ A.T + Q)
        for s in range(T):
            for t in range(s, T):
                c = np.linalg.matrix_power(A, t - s) @ Pt[s]
                covs[2 * t : 2 * t + 2, 2 * s : 2 * s + 2] = c
                covs[2 * s : 2 * s + 2, 2 * t : 2 * t + 2] = c.T
        Cb = np.kron(np.eye(T), C)
        Syy = Cb @ covs @ Cb.T + np.kron(np.eye(T), R)
        Sxy = covs @ Cb.T
        post_mean = mx + Sxy @ np.linalg.solve(Syy, ys.ravel() - Cb @ mx)
        post_cov = covs - Sxy @ np.linalg.solve(Syy, Sxy.T)
        sm, sP = lg.kalman_smoother(ys)
        np.testing.assert_allclose(np.asarray(sm).ravel(), post_mean, atol=1e-9)
        for t in range(T):
            np.testing.assert_allclose(
                sP[t], post_cov[2 * t : 2 * t + 2, 2 * t : 2 * t + 2], atol=1e-9
            )
        # filtering at t = conditioning on y_{0:t} only
        kf = lg.kalman_filter(ys)
        k = 3
        idx = slice(0, k + 1)
        Syy_k = Syy[idx, idx]
        Sxy_k = Sxy[2 * k : 2 * k + 2, idx]
        fm = mx[2 * k : 2 * k + 2] + Sxy_k @ np.linalg.solve(Syy_k, ys[: k + 1, 0] - (Cb @ mx)[idx])
        np.testing.assert_allclose(kf.means[k], fm, atol=1e-9)


def test_linear_gaussian_simulate_and_interface():
    lg = LinearGaussian(A, C, Q, R, M0, P0)
    assert isinstance(lg, StateSpaceModel)
    xs, ys = lg.simulate(jax.random.key(0), 30)
    assert xs.shape == (30, 2) and ys.shape == (30, 1)
    d = lg.transition(jnp.ones(2), 1)
    np.testing.assert_allclose(d.mean, A @ np.ones(2), rtol=1e-6)
    assert lg.observation(jnp.ones(2), 0).event_shape == (1,)
    with pytest.raises(ValueError, match="`C` must have shape"):
        LinearGaussian(A, np.ones((1, 3)), Q, R, M0, P0)


def test_linear_gaussian_simulate_moments():
    """Stationary check of the simulator: Var(y_t) at t=0 over many replicates, z-test."""
    lg = LinearGaussian(A, C, Q, R, M0, P0)
    sims = jax.vmap(lambda k: lg.simulate(k, 3)[1])(jax.random.split(jax.random.key(2), 4000))
    y1 = np.asarray(sims[:, 1, 0], np.float64)
    P1 = A @ P0 @ A.T + Q
    mean1, var1 = (C @ A @ M0)[0], (C @ P1 @ C.T + R)[0, 0]
    assert abs(y1.mean() - mean1) < 4 * np.sqrt(var1 / y1.size)
    assert abs(y1.var() / var1 - 1) < 4 * np.sqrt(2 / y1.size)


def test_stochastic_volatility():
    sv = StochasticVolatility(mu=-1.0, phi=0.9, sigma=0.3)
    assert isinstance(sv, StateSpaceModel)
    xs, ys = jax.vmap(lambda k: sv.simulate(k, 50))(jax.random.split(jax.random.key(0), 400))
    assert xs.shape == (400, 50) and ys.shape == (400, 50)
    x = np.asarray(xs, np.float64).ravel()
    # stationary law N(mu, sigma^2 / (1 - phi^2)); correlated draws, so a loose 10 % band
    assert abs(x.mean() + 1.0) < 0.1
    assert abs(x.var() / (0.09 / 0.19) - 1) < 0.1
    # E[y^2] = E[exp(x)] = exp(mu + v / 2)
    ey2 = np.exp(-1.0 + 0.5 * 0.09 / 0.19)
    assert abs(np.mean(np.asarray(ys, np.float64) ** 2) / ey2 - 1) < 0.1
    assert np.isclose(float(sv.init().variance), 0.09 / 0.19, rtol=1e-5)
    assert np.isclose(float(sv.transition(jnp.float32(0.0), 1).mean), -1.0 + 0.9, rtol=1e-6)


def test_simulate_with_singular_covariances():
    """A known initial state (P0 = 0) and a noise-free state component are valid models:
    Cholesky-based draws were all NaN."""
    model = LinearGaussian(
        0.9 * np.eye(2),
        np.eye(2),
        np.diag([1.0, 0.0]),
        np.eye(2),
        np.array([1.0, 2.0]),
        np.zeros((2, 2)),
    )
    xs, ys = model.simulate(jax.random.PRNGKey(0), 6)
    assert np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))
    np.testing.assert_allclose(xs[0], [1.0, 2.0])  # the known initial state
    np.testing.assert_allclose(xs[:, 1], 2.0 * 0.9 ** np.arange(6), rtol=1e-5)  # no noise


def test_kalman_filter_checks_and_casts_its_observations():
    model = LinearGaussian(A, np.eye(2), Q, np.eye(2), M0, P0)
    ys = np.ones((4, 2))
    for bad in (ys[:, 0], ys[:, :1], ys.T):  # used to broadcast to a wrong likelihood
        with pytest.raises(ValueError, match=r"ys must have shape \(T, 2\)"):
            model.kalman_filter(bad)
    scalar = LinearGaussian(A[:1, :1], C[:, :1], Q[:1, :1], R, M0[:1], P0[:1, :1])
    as_ints = scalar.kalman_filter(np.arange(4)).log_likelihood  # (T,) of ints, dy = 1
    np.testing.assert_allclose(
        as_ints, scalar.kalman_filter(np.arange(4.0)[:, None]).log_likelihood, rtol=1e-6
    )


def test_stochastic_volatility_parameters_are_checked():
    with pytest.raises(ValueError, match=r"\|phi\| < 1"):
        StochasticVolatility(0.0, 1.2, 1.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        StochasticVolatility(0.0, 0.5, -1.0)
    with pytest.raises(ValueError, match="T must be a positive integer"):
        StochasticVolatility(0.0, 0.5, 1.0).simulate(jax.random.PRNGKey(0), 0)
