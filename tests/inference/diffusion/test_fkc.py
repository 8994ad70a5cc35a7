"""Feynman-Kac correctors against exact targets (research brief Sec. 5 and 7).

Protocol: exact Gaussian-mixture scores (VP and VE), R = 8 seeds vmapped inside one jit call,
statistics are self-normalised weighted estimates per seed; the standard error is the
across-seed SD / sqrt(R). FKC must lie within 4 SE of the exact value; the unweighted
heuristic (same SDE, no weights) must be off by many SE. A negative control doubles the FKC
log-weights (a factor-2 error) and must fail.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion import fkc
from inference.diffusion.samplers import time_grid
from inference.diffusion.sde import VESDE, VPSDE
from inference.smc import engine
from models import gmm_targets as gt
from models.gmm import GaussianMixture

R = 8
VE = VESDE(sigma_min=0.01, sigma_max=10.0)


def bimodal():
    return GaussianMixture(
        jnp.array([0.3, 0.7]), jnp.array([[-1.5], [1.5]]), jnp.array([0.16, 0.16])
    )


def poe_pair():
    p1 = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-1.5], [1.5]]), jnp.array([0.3, 0.3]))
    p2 = GaussianMixture(jnp.array([0.8, 0.2]), jnp.array([[-1.0], [2.0]]), jnp.array([0.5, 0.5]))
    return p1, p2


def cfg_pair():
    pu = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-0.5], [0.5]]), jnp.array([0.25, 0.25]))
    pc = GaussianMixture(jnp.array([1.0]), jnp.array([[0.5]]), jnp.array([0.25]))
    return pu, pc


def four_modes(std=0.4):
    m = jnp.array([[1.5, 1.5], [-1.5, 1.5], [1.5, -1.5], [-1.5, -1.5]])
    return GaussianMixture(jnp.ones(4) / 4, m, jnp.full((4,), std**2))


def pad(g: GaussianMixture, k: int = 2) -> GaussianMixture:
    """Pad a mixture with zero-weight copies of its first component up to ``k`` components, so
    that every 1-d problem has the same array shapes (one compilation serves them all)."""
    extra = k - g.num_components
    if extra <= 0:
        return g
    w = jnp.concatenate([g.weights, jnp.zeros(extra)])
    m = jnp.concatenate([g.means, jnp.repeat(g.means[:1], extra, 0)])
    c = jnp.concatenate([g.covs, jnp.repeat(g.covs[:1], extra, 0)])
    return GaussianMixture(w, m, c)


def stats(x):
    """Per-particle statistics: [1{x_0 > 0}, x_0, (x_0 - 1)^2, mean_i (|x_i| - 1.5)^2]."""
    return jnp.stack(
        [
            (x[:, 0] > 0).astype(x.dtype),
            x[:, 0],
            (x[:, 0] - 1.0) ** 2,
            jnp.mean((jnp.abs(x) - 1.5) ** 2, axis=-1),
        ],
        axis=-1,
    )


STAT = {"p_pos": 0, "mean": 1, "var_at_1": 2, "fold_var": 3}


@partial(jax.jit, static_argnames=("sde", "n", "steps", "every", "unroll"))
def _estimate(key, gmms, coeffs, zeta, wscale, ess, sde, n, steps, every=1, unroll=1):
    score_fns = [g.score_fn(sde) for g in gmms]
    log_q = [partial(lambda g, x, t: g.logpdf_t(x, t, sde), g) for g in gmms]
    base = fkc.fkc_feynman_kac(
        score_fns, list(coeffs), sde, gmms[0].dim, time_grid(sde, steps), zeta, log_q
    )

    def init(k, m):
        parts, log_w0 = base.init(k, m)
        return parts, wscale * log_w0

    def step(k, s, t):
        parts, log_g, aux = base.step(k, s, t)
        return parts, wscale * log_g, aux

    fk = engine.FeynmanKac(init, step)

    def one(k):
        res = engine.run(k, fk, n, steps, ess_threshold=ess, resample_every=every, unroll=unroll)
        w = jnp.exp(res.log_weights)
        return w @ stats(res.particles.x)

    return jax.vmap(one)(jax.random.split(key, R))


def estimate(
    key,
    gmms,
    coeffs,
    sde,
    n,
    steps,
    weighted=True,
    noise="target_score",
    ess=0.5,
    stat="p_pos",
    beta=None,
    scale_w=1.0,
    every=1,
    unroll=1,
):
    """(R,) per-seed weighted estimates of a statistic. Every 1-d problem is cast as two models
    with two components each (zero coefficients / zero weights pad), and the weighting is a
    traced factor (1: FKC, 0: the heuristic, 2 or 0.5: negative controls), so each SDE
    compiles once."""
    gmms = [pad(g) for g in gmms]
    coeffs = list(coeffs)
    while len(gmms) < 2:
        gmms.append(gmms[0])
        coeffs.append(0.0)
    zeta = fkc.noise_factor(noise, beta)
    out = _estimate(
        key,
        tuple(gmms),
        jnp.asarray(coeffs, jnp.float32),
        jnp.float32(zeta),
        jnp.float32(scale_w if weighted else 0.0),
        jnp.float32(ess if weighted else 0.0),
        sde,
        n,
        steps,
        every,
        unroll,
    )
    return out[:, STAT[stat]]


def z_score(est, exact):
    est = np.asarray(est, float)
    se = est.std(ddof=1) / np.sqrt(est.size)
    return (est.mean() - exact) / se, est.mean(), se


def report(name, exact, fkc_est, heur_est):
    zf, mf, sf = z_score(fkc_est, exact)
    zh, mh, sh = z_score(heur_est, exact)
    print(
        f"{name}: exact {exact:.4f} | FKC {mf:.4f} +- {sf:.4f} (z={zf:+.2f}) | "
        f"heuristic {mh:.4f} +- {sh:.4f} (z={zh:+.2f})"
    )
    return zf, zh


BIMODAL = (bimodal(),)
POE = poe_pair()
CFG = cfg_pair()
FOUR = (four_modes(),)
GAUSS = (GaussianMixture(jnp.ones(1), jnp.array([[1.0]]), jnp.array([0.16])),)


@pytest.mark.parametrize("sde", [VPSDE(), VE], ids=["vp", "ve"])
def test_anneal_bimodal_beta3(sde):
    exact = gt.prob_positive_1d(gt.tempered_separated(bimodal(), 3.0))
    assert abs(exact - 0.92703) < 1e-5
    key = jax.random.PRNGKey(1)
    est = estimate(key, BIMODAL, (3.0,), sde, 2000, 200)
    heur = estimate(
        key, BIMODAL, (3.0,), sde, 2000, 200, weighted=False, noise="tempered", beta=3.0
    )
    zf, zh = report(f"anneal beta=3 P+ ({type(sde).__name__})", exact, est, heur)
    assert abs(zf) < 4
    assert abs(zh) > 8


@pytest.mark.parametrize("every,unroll", [(5, 1), (25, 5)])
def test_anneal_bimodal_beta3_deciding_every_k_steps(every, unroll):
    """``resample_every=k`` (resampling decided once per block of k steps; 25, unrolled five
    steps at a time, is coarser than the README's GPU setting of 10) targets the same law: the
    weighted P(x > 0) matches the exact annealed value (with 5x fewer decisions than k = 5, a
    3x larger standard error)."""
    exact = gt.prob_positive_1d(gt.tempered_separated(bimodal(), 3.0))
    key = jax.random.PRNGKey(3)
    est = estimate(key, BIMODAL, (3.0,), VPSDE(), 2000, 200, every=every, unroll=unroll)
    zf, mf, sf = z_score(est, exact)
    print(f"anneal beta=3 P+, resample_every={every}: {mf:.4f} +- {sf:.4f} (exact {exact:.4f})")
    assert abs(zf) < 4


def test_anneal_gaussian_variance_and_factor_two_control():
    """Data N(1, 0.16), beta = 3: exact N(1, 0.16/3). Statistic: weighted E (x - 1)^2.

    Noise zeta = sqrt(3): for a Gaussian the FKC proposal settles near zeta^2 / (1 + zeta^2) of
    the annealed variance, and importance weights from N(0, r s^2) to N(0, s^2) have finite
    variance only for r > 1/2, i.e. zeta > 1. With zeta = 1 (r = 1/2 exactly) the estimate of a
    second moment is heavy-tailed: most seeds land low (0.0496 +- 0.0008 over 8 seeds for one
    key, 0.0601 +- 0.0083 for another), so a z-test on it is a coin toss."""
    sde = VPSDE()
    exact = 0.16 / 3
    key = jax.random.PRNGKey(2)
    args = (key, GAUSS, (3.0,), sde, 2000, 200)
    noise = math.sqrt(3.0)
    est = estimate(*args, stat="var_at_1", noise=noise)
    heur = estimate(*args, weighted=False, stat="var_at_1")  # zeta = 1, no weights: V / (2 beta)
    wrong = estimate(*args, stat="var_at_1", scale_w=2.0, noise=noise)
    half = estimate(*args, stat="var_at_1", scale_w=0.5, noise=noise)
    zf, zh = report("gaussian anneal var", exact, est, heur)
    zw, mw, sw = z_score(wrong, exact)
    zhalf, mhalf, shalf = z_score(half, exact)
    print(f"  2x weights: {mw:.4f} +- {sw:.4f} (z={zw:+.1f}); 0.5x: {mhalf:.4f} (z={zhalf:+.1f})")
    assert abs(zf) < 4 and abs(zh) > 8
    assert abs(zw) > 4 and abs(zhalf) > 4


def test_product_of_experts_1d():
    p1, p2 = poe_pair()
    prod, _ = gt.product_gmm(p1, p2)
    exact_p, exact_m = gt.prob_positive_1d(prod), float(prod.mean[0])
    assert abs(exact_p - 0.2139) < 1e-4 and abs(exact_m + 0.6889) < 1e-4
    sde = VPSDE()
    key = jax.random.PRNGKey(3)
    est = estimate(key, POE, (1.0, 1.0), sde, 2000, 200)
    heur = estimate(key, POE, (1.0, 1.0), sde, 2000, 200, weighted=False)
    zf, zh = report("PoE P+", exact_p, est, heur)
    assert abs(zf) < 4 and abs(zh) > 6


@pytest.mark.parametrize("w,exact_p,exact_m", [(2.0, 0.9403, 0.6450), (4.0, 0.9892, 0.7697)])
def test_cfg_mean(w, exact_p, exact_m):
    pu, pc = cfg_pair()
    grid = gt.grid_summary_1d(lambda x: (1 - w) * pu.logpdf(x) + w * pc.logpdf(x))
    assert abs(grid["p_pos"] - exact_p) < 1e-4 and abs(grid["mean"] - exact_m) < 1e-4
    sde = VPSDE() if w == 4.0 else VE
    key = jax.random.PRNGKey(4)
    est = estimate(key, CFG, (1.0 - w, w), sde, 2000, 200, stat="mean")
    heur = estimate(key, CFG, (1.0 - w, w), sde, 2000, 200, weighted=False, stat="mean")
    zf, zh = report(f"CFG w={w} mean ({type(sde).__name__})", exact_m, est, heur)
    assert abs(zf) < 4 and abs(zh) > 8


def test_anneal_2d_four_modes_beta10():
    """Fig. 1 toy (modes at (+-1.5, +-1.5), std 0.4, beta = 10), with weights (0.28, 0.24, 0.24,
    0.24) so that the mode masses are not fixed by symmetry: P(x_0 > 0) = 0.7393 exactly (well
    separated modes, brief Sec. 5 item 2). Every-step resampling as in the FKC paper. At
    beta = 10 the weights are very uneven (SE ~ 0.06 with 2000 particles), yet the heuristic's
    bias is still many of its own SEs."""
    g = four_modes_weighted()
    exact = float(jnp.sum(gt.tempered_separated(g, 10.0).weights[jnp.array([0, 2])]))
    assert abs(exact - 0.7393) < 1e-4
    sde = VPSDE()
    key = jax.random.PRNGKey(5)
    est = estimate(key, (g,), (10.0,), sde, 2000, 200, ess=1.0)
    heur = estimate(key, (g,), (10.0,), sde, 2000, 200, weighted=False)
    zf, zh = report("2D four modes beta=10 P(x0>0)", exact, est, heur)
    assert abs(zf) < 4 and abs(zh) > 8


def four_modes_weighted():
    m = jnp.array([[1.5, 1.5], [-1.5, 1.5], [1.5, -1.5], [-1.5, -1.5]])
    return GaussianMixture(jnp.array([0.28, 0.24, 0.24, 0.24]), m, jnp.full((4,), 0.16))


def _run(window, ess, steps=40, n=256):
    g = bimodal()
    sde = VPSDE()
    return jax.jit(
        lambda k: fkc.fkc_sample(
            k, [g.score_fn(sde)], [3.0], sde, 1, n, steps, ess_threshold=ess, window=window
        )
    )(jax.random.PRNGKey(0))


def test_active_window_defers_weights_exactly():
    """Without resampling, the window only delays weights: same final weights and evidence.
    With ESS resampling, resampling happens only after steps whose tau lies in the window."""
    steps = 40
    plain = _run(None, 0.0, steps)
    win = _run((0.3, 0.6), 0.0, steps)
    np.testing.assert_allclose(win.log_weights, plain.log_weights, atol=2e-4)
    np.testing.assert_allclose(win.log_normalizer, plain.log_normalizer, atol=2e-4)
    np.testing.assert_allclose(win.samples, plain.samples)
    res = _run((0.3, 0.6), 0.5, steps)
    tau = (np.arange(steps) * 1.0) / steps  # uniform grid: tau_k = k / steps
    in_window = (tau >= 0.3) & (tau <= 0.6)
    resampled = np.asarray(res.resampled)
    # resampling at the start of step k uses the weights released by step k - 1
    allowed = np.concatenate([[False], in_window[:-1]])
    assert resampled.any()
    assert not resampled[~allowed].any()


def test_tempered_noise_warns_and_validates():
    with pytest.warns(UserWarning, match="unstable"):
        assert fkc.noise_factor("tempered", 3.0) == pytest.approx(3.0**-0.5)
    assert fkc.noise_factor("tempered", 1.5) == pytest.approx(1.5**-0.5)
    assert fkc.noise_factor("target_score") == 1.0
    with pytest.raises(ValueError, match="noise"):
        fkc.noise_factor("bogus")
    with pytest.raises(ValueError, match="beta"):
        fkc.noise_factor("tempered", None)


# ----------------------------------------------------------------------------- slow suite


@pytest.mark.slow
def test_tempered_noise_fkc_instability_regression():
    """Known limitation (brief Sec. 2): tempered noise + FKC at beta = 3 (VP, Gaussian data)
    settles on a too narrow variance (~0.026 vs 0.0533) while target score is right."""
    exact = 0.16 / 3
    key = jax.random.PRNGKey(7)
    good = estimate(key, GAUSS, (3.0,), VPSDE(), 4000, 1000, stat="var_at_1")
    with pytest.warns(UserWarning):
        bad = estimate(
            key, GAUSS, (3.0,), VPSDE(), 4000, 1000, stat="var_at_1", noise="tempered", beta=3.0
        )
    zg, mg, sg = z_score(good, exact)
    zb, mb, sb = z_score(bad, exact)
    print(f"target score {mg:.4f} +- {sg:.4f}; tempered {mb:.4f} +- {sb:.4f}; exact {exact:.4f}")
    assert abs(zg) < 4 and zb < -4


@pytest.mark.slow
@pytest.mark.parametrize("ess", [0.5, 1.0])
def test_convergence_sweep(ess):
    """Bimodal annealing beta = 3 (VP): the RMSE of the P+ estimate over 2 x 8 seeds falls from
    (K=1000, 250 steps) to (K=10^4, 1000 steps). The per-seed estimates are heavy-tailed (the
    proposal is narrower than the target), so 8 seeds alone can be dominated by one outlier."""
    exact = gt.prob_positive_1d(gt.tempered_separated(bimodal(), 3.0))
    rmse = {}
    for n, steps in [(1000, 250), (10_000, 1000)]:
        e = np.concatenate(
            [
                np.asarray(
                    estimate(jax.random.PRNGKey(s), BIMODAL, (3.0,), VPSDE(), n, steps, ess=ess)
                )
                for s in (8, 18)
            ]
        )
        rmse[(n, steps)] = float(np.sqrt(np.mean((e - exact) ** 2)))
        print(n, steps, ess, z_score(e, exact), rmse[(n, steps)])
    assert rmse[(10_000, 1000)] < rmse[(1000, 250)]


@pytest.mark.slow
@pytest.mark.parametrize("sde", [VPSDE(), VE], ids=["vp", "ve"])
def test_log_normalizer_gaussian(sde):
    """log int N(x; 1, 0.16)^3 dx = -log(2 pi 0.16) - log(3)/2 = -0.5546, every-step resampling,
    3200 steps (the left-point weight has an O(h) bias of the evidence)."""
    exact = -np.log(2 * np.pi * 0.16) - 0.5 * np.log(3.0)
    g = GAUSS[0]
    f = jax.jit(
        jax.vmap(
            lambda k: (
                fkc.fkc_sample(
                    k,
                    [g.score_fn(sde)],
                    [3.0],
                    sde,
                    1,
                    2000,
                    3200,
                    ess_threshold=1.0,
                    log_q_T=[lambda x, t: g.logpdf_t(x, t, sde)],
                ).log_normalizer
            )
        )
    )
    lz = np.asarray(f(jax.random.split(jax.random.PRNGKey(9), R)))
    z, m, se = z_score(lz, exact)
    print(f"log Z {m:.3f} +- {se:.3f} vs exact {exact:.4f}")
    assert abs(z) < 4


@pytest.mark.slow
def test_anneal_2d_equal_four_modes_variance():
    """Equal-weight Fig. 1 toy at beta = 10: within-mode variance 0.016, with noise factor
    zeta = sqrt(3) (fkc.noise_factor). With the target-score noise zeta = 1 the proposal has
    about half the target's within-mode variance (heuristic 0.0083), the final weights are
    borderline infinite-variance and FKC gives 0.0144 +- 0.0002 (K = 8000, 1000 steps; 0.0149
    with 16 K particles or 4000 steps) with mode masses off by ~0.2 per run; zeta^2 = 3 brings
    the proposal to ~3/4 of the target's variance: measured 0.0157-0.0159 +- 0.0001 here."""
    key = jax.random.PRNGKey(10)
    est = estimate(
        key, FOUR, (10.0,), VPSDE(), 8000, 1000, stat="fold_var", ess=1.0, noise=np.sqrt(3.0)
    )
    heur = estimate(key, FOUR, (10.0,), VPSDE(), 8000, 1000, stat="fold_var", weighted=False)
    zf, zh = report("2D equal four modes beta=10 within-mode var", 0.016, est, heur)
    assert abs(zf) < 4 and abs(zh) > 8


@partial(jax.jit, static_argnames=("weighted",))
def _variable_beta_p_pos(key, weighted):
    g = bimodal()
    sde = VPSDE()

    def beta(tau):
        return 1.0 + 2.0 * tau

    def one(k):
        r = fkc.fkc_sample(
            k,
            [g.score_fn(sde)],
            [beta],
            sde,
            1,
            2000,
            200,
            weighted=weighted,
            log_q_T=[lambda x, t: g.logpdf_t(x, t, sde)],
        )
        return jnp.exp(r.log_weights) @ (r.samples[:, 0] > 0)

    return jax.vmap(one)(jax.random.split(key, R))


def test_variable_temperature_uses_ito_log_density():
    """beta(tau) = 1 + 2 tau: the weight gains (dbeta/dtau) log q (FKC Table 1 / Prop. C.6) with
    log q carried by the Itô estimator; the end target is p^3 (P+ = 0.92703). Without the
    weights the same SDE is off."""
    exact = gt.prob_positive_1d(gt.tempered_separated(bimodal(), 3.0))
    key = jax.random.PRNGKey(11)
    est = _variable_beta_p_pos(key, True)
    heur = _variable_beta_p_pos(key, False)
    zf, zh = report("variable beta(tau)=1+2tau P+", exact, est, heur)
    assert abs(zf) < 4 and abs(zh) > 4
