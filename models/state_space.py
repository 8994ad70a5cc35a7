"""Ready-made state-space models: linear-Gaussian (with its exact Kalman filter and RTS
smoother) and stochastic volatility.

Both are :class:`ppl.state_space.StateSpaceModel` instances, so
``ppl.particle_filter(model, ys)`` and ``ppl.pmmh`` accept them directly.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax import Array
from jax.scipy.linalg import cho_solve

from ppl.state_space import StateSpaceModel

__all__ = ["LinearGaussian", "KalmanResult", "StochasticVolatility"]


class KalmanResult(NamedTuple):
    """Exact filtering output: ``log p(y_{0:T-1})``, ``E[x_t | y_{0:t}]``, ``Cov[x_t | y_{0:t}]``,
    and the one-step predictions ``E[x_t | y_{0:t-1}]``, ``Cov[x_t | y_{0:t-1}]``."""

    log_likelihood: Array
    means: Array
    covs: Array
    pred_means: Array
    pred_covs: Array


def _sym(m):
    return 0.5 * (m + jnp.swapaxes(m, -1, -2))


def _concrete(x):
    """``x`` as a NumPy array, or ``None`` when it is traced (parameters inside PMMH)."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _gaussian_draws(key, mean, cov, shape=()):
    """``N(mean, cov)`` draws through the Cholesky factor (the stream of every earlier
    release), or an eigendecomposition where ``cov`` is singular (Cholesky gives NaN there):
    a known initial state ``P0 = 0`` or a noise-free state component is a valid model."""
    draws = jax.random.multivariate_normal(key, mean, cov, shape)
    singular = jax.random.multivariate_normal(key, mean, cov, shape, method="eigh")
    return jnp.where(jnp.all(jnp.isfinite(draws)), draws, singular)


def _check_length(T) -> int:
    if isinstance(T, bool) or not isinstance(T, int | np.integer) or T < 1:
        raise ValueError(f"T must be a positive integer (the number of time steps); got {T!r}")
    return int(T)


class LinearGaussian(StateSpaceModel):
    """Linear-Gaussian state-space model (Kalman 1960; Chopin & Papaspiliopoulos 2020, Sec. 2.4.1)

        X_0 ~ N(m0, P0),  X_t = A X_{t-1} + U_t,  U_t ~ N(0, Q),
        Y_t = C X_t + V_t,  V_t ~ N(0, R),

    with ``A (dx, dx)``, ``C (dy, dx)``, ``Q (dx, dx)``, ``R (dy, dy)``, ``m0 (dx,)``,
    ``P0 (dx, dx)``. Parameters may be traced (for PMMH).
    """

    def __init__(self, A, C, Q, R, m0, P0):
        self.A, self.C, self.Q, self.R = (jnp.asarray(a) for a in (A, C, Q, R))
        self.m0, self.P0 = jnp.asarray(m0), jnp.asarray(P0)
        dx, dy = self.A.shape[0], self.C.shape[0]
        expected = {
            "A": (dx, dx),
            "C": (dy, dx),
            "Q": (dx, dx),
            "R": (dy, dy),
            "m0": (dx,),
            "P0": (dx, dx),
        }
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"LinearGaussian: `{name}` must have shape {shape}, got "
                    f"{getattr(self, name).shape}"
                )
        self.dx, self.dy = dx, dy
        super().__init__(self._init_dist, self._transition_dist, self._observation_dist)

    def _init_dist(self):
        return dist.MultivariateNormal(self.m0, self.P0)

    def _transition_dist(self, x_prev, t):
        return dist.MultivariateNormal(self.A @ x_prev, self.Q)

    def _observation_dist(self, x, t):
        return dist.MultivariateNormal(self.C @ x, self.R)

    def simulate(self, key: Array, T: int) -> tuple[Array, Array]:
        """Draw ``(xs (T, dx), ys (T, dy))`` from the model; singular covariances (a known
        initial state ``P0 = 0``, a noise-free state component) are valid."""
        T = _check_length(T)
        k0, kx, ky = jax.random.split(key, 3)
        x0 = _gaussian_draws(k0, self.m0, self.P0)
        noise = _gaussian_draws(kx, jnp.zeros(self.dx), self.Q, (T - 1,))

        def body(x, u):
            x = self.A @ x + u
            return x, x

        _, xs = jax.lax.scan(body, x0, noise)
        xs = jnp.concatenate([x0[None], xs])
        ys = xs @ self.C.T + _gaussian_draws(ky, jnp.zeros(self.dy), self.R, (T,))
        return xs, ys

    def _check_observations(self, ys) -> Array:
        """``ys`` as ``(T, dy)`` in the parameters' floating dtype (``(T,)`` when ``dy = 1``)."""
        ys = jnp.asarray(ys)
        if ys.ndim == 1 and self.dy == 1:
            ys = ys[:, None]
        if ys.ndim != 2 or ys.shape[1] != self.dy or ys.shape[0] < 1:
            raise ValueError(
                f"ys must have shape (T, {self.dy}) (one row of dy={self.dy} observations per "
                f"time step); got {ys.shape}"
            )
        dtype = jnp.result_type(ys, self.A, self.C, self.Q, self.R, self.m0, self.P0, float)
        return ys.astype(dtype)

    def kalman_filter(self, ys: Array) -> KalmanResult:
        """Kalman filter: exact ``log p(y_{0:T-1})`` and filtering moments.

        Prediction ``m^- = A m, P^- = A P A' + Q`` (skipped at ``t = 0``: ``m0, P0``); update
        with ``S = C P^- C' + R``, ``K = P^- C' S^{-1}``, ``m = m^- + K (y - C m^-)``,
        ``P = (I - K C) P^- (I - K C)' + K R K'`` (Joseph form); the likelihood is
        ``sum_t log N(y_t; C m^-_t, S_t)`` (Chopin & Papaspiliopoulos 2020, Sec. 7.2).
        """
        ys = self._check_observations(ys)
        eye = jnp.eye(self.dx, dtype=ys.dtype)

        def update(m_pred, P_pred, y):
            S = _sym(self.C @ P_pred @ self.C.T + self.R)
            L = jnp.linalg.cholesky(S)
            resid = y - self.C @ m_pred
            K = cho_solve((L, True), self.C @ P_pred).T
            m = m_pred + K @ resid
            IKC = eye - K @ self.C
            P = _sym(IKC @ P_pred @ IKC.T + K @ self.R @ K.T)
            alpha = jax.scipy.linalg.solve_triangular(L, resid, lower=True)
            ll = (
                -0.5 * jnp.sum(alpha**2)
                - jnp.sum(jnp.log(jnp.diag(L)))
                - 0.5 * self.dy * jnp.log(2 * jnp.pi)
            )
            return m, P, ll

        def body(carry, inp):
            m, P = carry
            t, y = inp
            m_pred = jnp.where(t == 0, self.m0, self.A @ m)
            P_pred = jnp.where(t == 0, self.P0, _sym(self.A @ P @ self.A.T + self.Q))
            m, P, ll = update(m_pred, P_pred, y)
            return (m, P), (m, P, m_pred, P_pred, ll)

        T = ys.shape[0]
        init = (jnp.zeros(self.dx, ys.dtype), jnp.zeros((self.dx, self.dx), ys.dtype))
        _, (ms, Ps, mps, Pps, lls) = jax.lax.scan(body, init, (jnp.arange(T), ys))
        return KalmanResult(jnp.sum(lls), ms, Ps, mps, Pps)

    def kalman_smoother(self, ys: Array) -> tuple[Array, Array]:
        """Rauch-Tung-Striebel smoother: ``E[x_t | y_{0:T-1}]`` ``(T, dx)`` and covariances.

        ``G_t = P_t A' (P^-_{t+1})^{-1}``, ``m^s_t = m_t + G_t (m^s_{t+1} - m^-_{t+1})``,
        ``P^s_t = P_t + G_t (P^s_{t+1} - P^-_{t+1}) G_t'`` (Rauch, Tung & Striebel 1965;
        Chopin & Papaspiliopoulos 2020, Sec. 7.3).
        """
        kf = self.kalman_filter(ys)

        def body(carry, inp):
            ms_next, Ps_next = carry
            m, P, mp_next, Pp_next = inp
            G = jnp.linalg.solve(Pp_next, self.A @ P).T
            ms = m + G @ (ms_next - mp_next)
            Ps = _sym(P + G @ (Ps_next - Pp_next) @ G.T)
            return (ms, Ps), (ms, Ps)

        inp = (kf.means[:-1], kf.covs[:-1], kf.pred_means[1:], kf.pred_covs[1:])
        _, (ms, Ps) = jax.lax.scan(body, (kf.means[-1], kf.covs[-1]), inp, reverse=True)
        return (
            jnp.concatenate([ms, kf.means[-1:]]),
            jnp.concatenate([Ps, kf.covs[-1:]]),
        )

    def optimal_proposal(self):
        """The locally optimal proposal ``p(x_t | x_{t-1}, y_t)`` as ``(proposal, proposal0)``
        for ``ppl.particle_filter(method="guided")`` (Chopin & Papaspiliopoulos 2020,
        Sec. 10.3.2): ``N(Sigma (Q^{-1} A x_{t-1} + C' R^{-1} y_t), Sigma)`` with
        ``Sigma = (Q^{-1} + C' R^{-1} C)^{-1}``, and at ``t = 0`` the same with ``(m0, P0)``.
        """
        CtRi = jnp.linalg.solve(self.R, self.C).T  # C' R^{-1}

        def post(prior_mean, prior_cov, y):
            prec = jnp.linalg.inv(prior_cov) + CtRi @ self.C
            cov = _sym(jnp.linalg.inv(prec))
            mean = cov @ (jnp.linalg.solve(prior_cov, prior_mean) + CtRi @ y)
            return dist.MultivariateNormal(mean, cov)

        def proposal(x_prev, y, t):
            return post(self.A @ x_prev, self.Q, y)

        def proposal0(y):
            return post(self.m0, self.P0, y)

        return proposal, proposal0


class StochasticVolatility(StateSpaceModel):
    """Stochastic volatility model (Chopin & Papaspiliopoulos 2020, Sec. 2.4.3)

        X_0 ~ N(mu, sigma^2 / (1 - phi^2)),  X_t = mu + phi (X_{t-1} - mu) + sigma U_t,
        Y_t | X_t ~ N(0, exp(X_t)),

    with ``|phi| < 1`` (the initial law is the stationary one). The state is scalar.
    """

    def __init__(self, mu, phi, sigma):
        self.mu, self.phi, self.sigma = (jnp.asarray(a) for a in (mu, phi, sigma))
        phi_value, sigma_value = _concrete(self.phi), _concrete(self.sigma)
        if phi_value is not None and not np.all(np.abs(phi_value) < 1):
            raise ValueError(f"StochasticVolatility: phi must satisfy |phi| < 1; got {phi_value}")
        if sigma_value is not None and not np.all(sigma_value > 0):
            raise ValueError(f"StochasticVolatility: sigma must be > 0; got {sigma_value}")
        super().__init__(self._init_dist, self._transition_dist, self._observation_dist)

    def _init_dist(self):
        return dist.Normal(self.mu, self.sigma / jnp.sqrt(1.0 - self.phi**2))

    def _transition_dist(self, x_prev, t):
        return dist.Normal(self.mu + self.phi * (x_prev - self.mu), self.sigma)

    def _observation_dist(self, x, t):
        return dist.Normal(0.0, jnp.exp(0.5 * x))

    def simulate(self, key: Array, T: int) -> tuple[Array, Array]:
        """Draw ``(xs (T,), ys (T,))`` from the model."""
        T = _check_length(T)
        k0, kx, ky = jax.random.split(key, 3)
        x0 = self.mu + self.sigma / jnp.sqrt(1.0 - self.phi**2) * jax.random.normal(k0)

        def body(x, e):
            x = self.mu + self.phi * (x - self.mu) + self.sigma * e
            return x, x

        _, xs = jax.lax.scan(body, x0, jax.random.normal(kx, (T - 1,)))
        xs = jnp.concatenate([x0[None], xs])
        ys = jnp.exp(0.5 * xs) * jax.random.normal(ky, (T,))
        return xs, ys
