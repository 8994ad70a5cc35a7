"""Forward SDEs: schedule identities, closed-form values, inverse noise level, forward
simulation against the stated marginals, and time-range validation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.sde import EDMSDE, VESDE, VPSDE, SubVPSDE, check_time, get_sde

SDES = [VPSDE(), SubVPSDE(), VESDE(), EDMSDE()]
IDS = ["vp", "subvp", "ve", "edm"]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_g2_equals_dsigma2_minus_2_lambda_sigma2(sde):
    # g^2 = d sigma^2/dt - 2 lambda sigma^2 and lambda = d log alpha / dt (SuperDiff Prop. 2)
    with jax.enable_x64(True):
        for frac in (0.1, 0.37, 0.8):
            t = sde.t_min + frac * (sde.t_max - sde.t_min)
            ds2 = jax.grad(lambda u: sde.marginal_std(u) ** 2)(t)
            lam = jax.grad(lambda u: jnp.log(sde.marginal_mean_coeff(u)))(t)
            np.testing.assert_allclose(sde.drift_coeff(t), lam, rtol=1e-10, atol=1e-12)
            g2 = ds2 - 2.0 * lam * sde.marginal_std(t) ** 2
            np.testing.assert_allclose(sde.diffusion(t) ** 2, g2, rtol=1e-8)


def test_closed_form_values():
    with jax.enable_x64(True):
        vp, sub, ve, edm = SDES
        b1 = 0.1 + 0.5 * 19.9  # B(1)
        np.testing.assert_allclose(vp.marginal_mean_coeff(1.0), math.exp(-b1 / 2), rtol=1e-12)
        np.testing.assert_allclose(vp.marginal_std(1.0) ** 2, 1 - math.exp(-b1), rtol=1e-12)
        np.testing.assert_allclose(sub.marginal_std(1.0), 1 - math.exp(-b1), rtol=1e-12)
        np.testing.assert_allclose(vp.diffusion(0.5) ** 2, 0.1 + 0.5 * 19.9, rtol=1e-12)
        np.testing.assert_allclose(ve.marginal_std(1.0) ** 2, 50.0**2 - 0.01**2, rtol=1e-12)
        np.testing.assert_allclose(ve.diffusion(1.0), 50 * math.sqrt(2 * math.log(5000)))
        np.testing.assert_allclose(edm.marginal_std(3.0), 3.0)
        np.testing.assert_allclose(edm.diffusion(3.0), math.sqrt(6.0))
        assert vp.t_min == 1e-3 and vp.t_max == 1.0
        # sub-VP variance is below VP's
        assert float(sub.marginal_std(0.3)) < float(vp.marginal_std(0.3))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_time_of_noise_level_inverts(sde):
    with jax.enable_x64(True):
        t = jnp.linspace(sde.t_min, sde.t_max, 7)
        np.testing.assert_allclose(sde.time_of_noise_level(sde.noise_level(t)), t, rtol=1e-9)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_logpdf_and_sample(sde):
    x = jnp.array([[0.5, -1.0, 2.0]])
    s = sde.prior_std
    expected = -0.5 * (0.25 + 1 + 4) / s**2 - 1.5 * math.log(2 * math.pi * s**2)
    np.testing.assert_allclose(sde.prior_logpdf(x), [expected], rtol=1e-5)
    z = sde.prior_sample(jax.random.PRNGKey(0), (20000, 2))
    # std of the sample std ~ s / sqrt(2n) = 0.005 s
    np.testing.assert_allclose(jnp.std(z), s, rtol=0.02)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_forward_simulation_matches_marginals(sde):
    # Euler-Maruyama on dx = f dt + g dW from x_0 = 1 reproduces N(alpha_t, sigma_t^2):
    # ties drift and diffusion to the stated marginals (a factor 2 in g^2 fails).
    n, steps = 20000, 400
    t0, t1 = sde.t_min, sde.t_min + 0.5 * (sde.t_max - sde.t_min)
    if isinstance(sde, EDMSDE):
        t1 = 2.0
    ts = jnp.linspace(t0, t1, steps + 1)
    x0 = jnp.ones((n,))

    def body(x, inp):
        k, t, tn = inp
        h = tn - t
        z = jax.random.normal(k, x.shape)
        return x + sde.drift(x, t) * h + sde.diffusion(t) * jnp.sqrt(h) * z, None

    keys = jax.random.split(jax.random.PRNGKey(1), steps)
    x, _ = jax.lax.scan(body, x0, (keys, ts[:-1], ts[1:]))
    a = sde.marginal_mean_coeff(t1) / sde.marginal_mean_coeff(t0)
    # exact transition from t0: x_t1 = a x_t0 + N(0, sigma1^2 - a^2 sigma0^2)
    var = sde.marginal_std(t1) ** 2 - a**2 * sde.marginal_std(t0) ** 2
    se_mean = float(jnp.sqrt(var / n))
    assert abs(float(jnp.mean(x)) - float(a)) < 4 * se_mean + 0.01 * float(a)
    # sample variance: relative SE sqrt(2/n) = 1%; 1st-order EM bias < 2% with 400 steps
    np.testing.assert_allclose(float(jnp.var(x)), float(var), rtol=0.06)


def test_check_time_raises():
    sde = VPSDE()
    check_time(sde, 0.5)
    with pytest.raises(ValueError, match="t_min"):
        check_time(sde, 0.0)
    with pytest.raises(ValueError, match=r"\[0.001, 1.0\]"):
        check_time(sde, jnp.array([0.5, 1.5]))
    # traced values pass through
    jax.jit(lambda t: (check_time(sde, t), t)[1])(5.0)


def test_get_sde():
    assert get_sde("vp") == VPSDE()
    assert get_sde("ve", sigma_max=10.0).sigma_max == 10.0
    with pytest.raises(ValueError, match="unknown sde"):
        get_sde("nope")
