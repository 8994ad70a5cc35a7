"""FFBS backward sampling against the exact RTS smoother of a linear-Gaussian model."""

import jax
import jax.numpy as jnp
import numpy as np

from inference.smc import filters, smoothing

DX, T = 2, 60
A = np.array([[0.95, 0.1], [-0.1, 0.9]])
C = np.array([[1.0, 0.3]])
Q = np.array([[0.3, 0.05], [0.05, 0.2]])
R = np.array([[0.5]])
P0 = np.eye(DX)


def _simulate(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.zeros(DX), P0)
    ys = []
    for t in range(T):
        if t > 0:
            x = A @ x + rng.multivariate_normal(np.zeros(DX), Q)
        ys.append(C @ x + rng.normal(0, np.sqrt(R[0, 0]), 1))
    return np.array(ys)


YS = _simulate()


def rts(ys):
    """Float64 Kalman filter and RTS smoother: filter means, smoothed means and covariances."""
    ms, Ps, mps, Pps = [], [], [], []
    m, P = np.zeros(DX), P0
    for t, y in enumerate(ys):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q
        mps.append(m)
        Pps.append(P)
        S = C @ P @ C.T + R
        K = P @ C.T @ np.linalg.inv(S)
        m, P = m + K @ (y - C @ m), (np.eye(DX) - K @ C) @ P
        ms.append(m)
        Ps.append(P)
    sm, sP = [ms[-1]], [Ps[-1]]
    for t in range(len(ys) - 2, -1, -1):
        G = Ps[t] @ A.T @ np.linalg.inv(Pps[t + 1])
        sm.insert(0, ms[t] + G @ (sm[0] - mps[t + 1]))
        sP.insert(0, Ps[t] + G @ (sP[0] - Pps[t + 1]) @ G.T)
    return np.array(ms), np.array(sm), np.array(sP)


FM, SM, SP = rts(YS)
Aj, Cj, Qj, Rj = (jnp.asarray(a, jnp.float32) for a in (A, C, Q, R))
LQ = jnp.linalg.cholesky(Qj)
Qinv = jnp.linalg.inv(Qj)


def init_sample(key, n):
    return jax.random.normal(key, (n, DX))


def transition_sample(key, xp, t):
    return xp @ Aj.T + jax.random.normal(key, xp.shape) @ LQ.T


def transition_logpdf(x, xp, t):
    r = x - xp @ Aj.T
    return -0.5 * jnp.sum((r @ Qinv) * r, -1)  # constants cancel in backward sampling


def obs_logpdf(y, x, t):
    return -0.5 * jnp.sum((y - x @ Cj.T) ** 2, -1) / Rj[0, 0]


def test_ffbs_matches_rts_smoother():
    """FFBS smoothed means over 20 independent filter runs vs the RTS means (z-scores), and
    marginal smoothing variances within Monte Carlo error."""
    n, m, runs = 400, 50, 20

    def one(key):
        k1, k2 = jax.random.split(key)
        out = filters.bootstrap_filter(
            k1,
            jnp.asarray(YS, jnp.float32),
            n,
            init_sample,
            transition_sample,
            obs_logpdf,
            store_history=True,
        )
        traj = smoothing.ffbs(k2, out.particles, out.log_weights, transition_logpdf, m)
        return traj.mean(1), jnp.var(traj, axis=1)

    means, var = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(7), runs))
    means, var = np.asarray(means), np.asarray(var)
    assert means.shape == (runs, T, DX)
    z = (means.mean(0) - SM) / (means.std(0, ddof=1) / np.sqrt(runs))
    assert np.max(np.abs(z)) < 5.0, np.max(np.abs(z))
    sd = np.sqrt(np.diagonal(SP, axis1=1, axis2=2))
    err = np.mean(np.abs(means.mean(0) - SM) / sd)
    assert err < 0.1, err
    # they are smoothed, not filtered, means: the filter means are much further away
    assert np.mean(np.abs(FM - SM) / sd) > 3 * err
    # marginal smoothing variances: mean over runs and t of var_hat / var within 15 %
    ratio = var.mean(0) / np.diagonal(SP, axis1=1, axis2=2)
    assert np.all(np.abs(ratio.mean(0) - 1) < 0.15), ratio.mean(0)


def test_ffbs_shapes_and_pytree_particles():
    out = filters.bootstrap_filter(
        jax.random.key(0),
        jnp.asarray(YS[:10], jnp.float32),
        32,
        init_sample,
        transition_sample,
        obs_logpdf,
        store_history=True,
    )
    assert out.particles.shape == (10, 32, DX) and out.log_weights.shape == (10, 32)
    tr = smoothing.ffbs(
        jax.random.key(1),
        {"a": out.particles},
        out.log_weights,
        lambda x, xp, t: transition_logpdf(x["a"], xp["a"], t),
        5,
    )
    assert tr["a"].shape == (10, 5, DX)
    # every smoothed state is one of the stored particles at that time
    p = np.asarray(out.particles)
    for t in (0, 5, 9):
        d = np.abs(np.asarray(tr["a"][t])[:, None, :] - p[t][None]).sum(-1).min(1)
        assert np.all(d == 0)
