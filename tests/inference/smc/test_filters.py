"""Particle filters on a linear-Gaussian model against the exact Kalman filter and
RTS smoother (a self-contained float64 numpy reference, independent of ``models/``)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.smc import filters

# --- model: dx = 3, dy = 2, T = 100 --------------------------------------------------------
DX, DY, T = 3, 2, 100
A = np.array([[0.9, 0.2, 0.0], [0.0, 0.8, 0.1], [0.1, 0.0, 0.7]])
C = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])
Q = 0.25 * np.eye(DX) + 0.05
R = 1.0 * np.eye(DY)
M0 = np.zeros(DX)
P0 = np.eye(DX)


def _simulate(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(M0, P0)
    xs, ys = [], []
    for t in range(T):
        if t > 0:
            x = A @ x + rng.multivariate_normal(np.zeros(DX), Q)
        xs.append(x)
        ys.append(C @ x + rng.multivariate_normal(np.zeros(DY), R))
    return np.array(xs), np.array(ys)


XS, YS = _simulate()


def kalman(ys):
    """Float64 Kalman filter + RTS smoother: (loglik, filt means, filt covs, smooth means,
    smooth covs)."""
    ms, Ps, mps, Pps, ll = [], [], [], [], 0.0
    m, P = M0, P0
    for t, y in enumerate(ys):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q
        mps.append(m)
        Pps.append(P)
        S = C @ P @ C.T + R
        r = y - C @ m
        ll += -0.5 * (r @ np.linalg.solve(S, r) + np.linalg.slogdet(2 * np.pi * S)[1])
        K = P @ C.T @ np.linalg.inv(S)
        m, P = m + K @ r, (np.eye(DX) - K @ C) @ P
        ms.append(m)
        Ps.append(P)
    sm, sP = [ms[-1]], [Ps[-1]]
    for t in range(len(ys) - 2, -1, -1):
        G = Ps[t] @ A.T @ np.linalg.inv(Pps[t + 1])
        sm.insert(0, ms[t] + G @ (sm[0] - mps[t + 1]))
        sP.insert(0, Ps[t] + G @ (sP[0] - Pps[t + 1]) @ G.T)
    return ll, np.array(ms), np.array(Ps), np.array(sm), np.array(sP)


LL, FM, FP, SM, SP = kalman(YS)

# --- batched model functions (leading axis = particles) -----------------------------------
Aj, Cj, Qj, Rj = (jnp.asarray(a, jnp.float32) for a in (A, C, Q, R))
LQ, LP0 = jnp.linalg.cholesky(Qj), jnp.linalg.cholesky(jnp.asarray(P0, jnp.float32))
YSj = jnp.asarray(YS, jnp.float32)


def _mvn_logpdf(x, mean, cov):
    L = jnp.linalg.cholesky(cov)
    z = jax.scipy.linalg.solve_triangular(L, (x - mean).T, lower=True)
    d = x.shape[-1]
    return -0.5 * jnp.sum(z**2, 0) - jnp.sum(jnp.log(jnp.diag(L))) - 0.5 * d * jnp.log(2 * jnp.pi)


def init_sample(key, n):
    return jax.random.normal(key, (n, DX)) @ LP0.T


def init_logpdf(x):
    return _mvn_logpdf(x, jnp.zeros(DX), jnp.asarray(P0, jnp.float32))


def transition_sample(key, xp, t):
    return xp @ Aj.T + jax.random.normal(key, xp.shape) @ LQ.T


def transition_logpdf(x, xp, t):
    return _mvn_logpdf(x, xp @ Aj.T, Qj)


def obs_logpdf(y, x, t):
    return _mvn_logpdf(jnp.broadcast_to(y, (x.shape[0], DY)), x @ Cj.T, Rj)


# Locally optimal proposal p(x_t | x_{t-1}, y_t) = N(S (Q^-1 A x + C' R^-1 y), S),
# S = (Q^-1 + C' R^-1 C)^-1; at t = 0 the same with (m0, P0).
def _opt(prior_prec, prior_prec_mean, y):
    prec = prior_prec + Cj.T @ jnp.linalg.solve(Rj, Cj)
    cov = jnp.linalg.inv(prec)
    cov = 0.5 * (cov + cov.T)
    mean = (prior_prec_mean + (Cj.T @ jnp.linalg.solve(Rj, y))[None]) @ cov.T
    return mean, cov


def proposal(key, xp, t):
    Qi = jnp.linalg.inv(Qj)
    mean, cov = _opt(Qi, xp @ (Qi @ Aj).T, YSj[t])
    x = mean + jax.random.normal(key, xp.shape) @ jnp.linalg.cholesky(cov).T
    return x, _mvn_logpdf(x, mean, cov)


def proposal0(key, n):
    P0i = jnp.linalg.inv(jnp.asarray(P0, jnp.float32))
    mean, cov = _opt(P0i, jnp.zeros((n, DX)), YSj[0])
    x = mean + jax.random.normal(key, (n, DX)) @ jnp.linalg.cholesky(cov).T
    return x, _mvn_logpdf(x, mean, cov)


def exact_log_eta(xp, t):
    """p(y_t | x_{t-1}) = N(y_t; C A x_{t-1}, C Q C' + R): full adaptation (Pitt & Shephard)."""
    return _mvn_logpdf(
        jnp.broadcast_to(YSj[t], (xp.shape[0], DY)), xp @ (Cj @ Aj).T, Cj @ Qj @ Cj.T + Rj
    )


def run_filter(method, key, n, store_history=False, resampling="systematic", threshold=0.5):
    if method == "bootstrap":
        return filters.bootstrap_filter(
            key,
            YSj,
            n,
            init_sample,
            transition_sample,
            obs_logpdf,
            resampling,
            threshold,
            store_history,
        )
    if method == "guided":
        return filters.guided_filter(
            key,
            YSj,
            n,
            init_logpdf,
            transition_logpdf,
            obs_logpdf,
            proposal,
            proposal0,
            resampling,
            threshold,
            store_history,
        )
    common = (init_sample, init_logpdf, transition_sample, transition_logpdf, obs_logpdf)
    if method == "auxiliary":  # first-stage weights: predictive likelihood at the mean
        return filters.auxiliary_filter(
            key,
            YSj,
            n,
            *common,
            transition_mean=lambda xp, t: xp @ Aj.T,
            resampling=resampling,
            ess_threshold=threshold,
            store_history=store_history,
        )
    if method == "fully_adapted":  # exact eta + optimal proposal
        return filters.auxiliary_filter(
            key,
            YSj,
            n,
            *common,
            log_eta=exact_log_eta,
            proposal=proposal,
            proposal0=proposal0,
            resampling=resampling,
            ess_threshold=threshold,
            store_history=store_history,
        )
    raise ValueError(method)


@functools.cache
def replicated(method, n, runs=100, seed=0, resampling="systematic", threshold=0.5):
    fn = jax.jit(jax.vmap(lambda k: run_filter(method, k, n, False, resampling, threshold)))
    out = fn(jax.random.split(jax.random.key(seed), runs))
    return (
        np.asarray(out.log_likelihood, np.float64),
        np.asarray(out.filter_means),
        np.asarray(out.ess),
        np.asarray(out.log_likelihood_running),
    )


PARTICLES = {"bootstrap": 500, "guided": 200, "auxiliary": 300, "fully_adapted": 100}
# the fully adapted APF costs one more compilation: statistical check only in the slow suite
METHODS = [
    "bootstrap",
    "guided",
    "auxiliary",
    pytest.param("fully_adapted", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("method", METHODS)
def test_likelihood_estimate_unbiased(method):
    """E[p^N(y)] = p(y): over 100 independent runs, mean of exp(loglik_hat - exact) is within
    4 standard errors of 1 (Chopin & Papaspiliopoulos 2020, Prop. 16.3)."""
    ll, _, _, _ = replicated(method, PARTICLES[method])
    assert np.all(np.isfinite(ll))
    ratio = np.exp(ll - LL)
    mean, se = ratio.mean(), ratio.std(ddof=1) / np.sqrt(ratio.size)
    assert abs(mean - 1) < 4 * se, (method, mean, se, ll.std())
    # CLT on the log scale: log p^N ~ N(log p - s^2/2, s^2) (Berard, Del Moral & Doucet 2014);
    # the slack 0.1 s^2 covers higher-order terms
    se_log = ll.std(ddof=1) / np.sqrt(ll.size)
    tol = 4 * se_log + 0.1 * ll.var()
    assert abs(ll.mean() - (LL - ll.var() / 2)) < tol, (ll.mean(), LL, ll.var())
    # the variance is moderate, so this has power against a factor of 2 in the likelihood
    assert ll.std() < 1.0 and tol < np.log(2), (ll.std(), tol)


@pytest.mark.parametrize("method", METHODS)
def test_filter_means_match_kalman(method):
    """Average over 100 runs of sum_n W_t^n X_t^n vs the Kalman means, z-scores per (t, d)."""
    _, fm, ess, _ = replicated(method, PARTICLES[method])
    assert fm.shape == (100, T, DX) and ess.shape == (100, T)
    err = fm.mean(0) - FM
    se = fm.std(0, ddof=1) / np.sqrt(fm.shape[0])
    z = err / se
    assert np.max(np.abs(z)) < 5.0, np.max(np.abs(z))
    # each run is also accurate relative to the filtering sd (catches a wrong sign/scale)
    sd = np.sqrt(np.diagonal(FP, axis1=1, axis2=2))
    assert np.mean(np.abs(fm - FM) / sd) < 0.15
    assert np.all((ess >= 1.0 - 1e-3) & (ess <= PARTICLES[method] * (1 + 1e-4)))


def test_running_likelihood_matches_kalman_prefixes():
    ll_run = replicated("guided", PARTICLES["guided"])[3]
    exact_prefix = np.array([kalman(YS[: t + 1])[0] for t in (0, 9, 49)])
    for i, t in enumerate((0, 9, 49)):
        r = np.exp(ll_run[:, t] - exact_prefix[i])
        assert abs(r.mean() - 1) < 4 * r.std(ddof=1) / 10 + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("resampling,threshold", [("multinomial", 1.0), ("residual", 0.3)])
def test_other_resamplers_unbiased(resampling, threshold):
    ll = replicated("guided", PARTICLES["guided"], 100, 1, resampling, threshold)[0]
    ratio = np.exp(ll - LL)
    assert abs(ratio.mean() - 1) < 4 * ratio.std(ddof=1) / 10


def test_auxiliary_needs_eta_or_mean():
    with pytest.raises(ValueError, match="log_eta"):
        filters.auxiliary_fk(
            YSj, init_sample, init_logpdf, transition_sample, transition_logpdf, obs_logpdf
        )
