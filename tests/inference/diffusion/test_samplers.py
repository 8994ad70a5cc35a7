"""Reverse-time samplers vs exact Gaussian-mixture samples under VP (2-d); acceptance rule
and negative controls in ``conftest.py`` (D^2 below the exact-vs-exact null bound; score x2,
x0.5 and sign flip must fail)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion import samplers as S
from inference.diffusion.sde import EDMSDE, VESDE, VPSDE, SubVPSDE

CASES = [("euler_maruyama", 500, "uniform"), ("heun", 100, "edm"), ("ddim", 200, "uniform")]


@pytest.mark.parametrize("method,steps,grid", CASES)
def test_vp_sampler_matches_exact(gmm2, bound2, h, method, steps, grid):
    h.check_sampler(gmm2, bound2, VPSDE(), method, steps, grid, controls=(2.0, 0.5, -1.0))


def test_time_grids():
    for sde in (VPSDE(), SubVPSDE(), VESDE(), EDMSDE()):
        for kind in ("uniform", "edm"):
            g = S.time_grid(sde, 50, kind)
            assert g.shape == (51,)
            np.testing.assert_allclose([g[0], g[-1]], [sde.t_max, sde.t_min], rtol=1e-6)
            assert bool(jnp.all(jnp.diff(g) < 0))
    # EDM grid for the EDM SDE is Karras et al. (2022) eq. 5 with rho = 7
    e = EDMSDE()
    i = np.arange(11) / 10
    karras = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(S.time_grid(e, 10, "edm"), karras, rtol=1e-5)
    with pytest.raises(ValueError, match="grid kind"):
        S.time_grid(e, 10, "log")


def test_trajectory_and_validation(gmm2):
    sde = VPSDE()
    sf = gmm2.score_fn(sde)
    x_T = sde.prior_sample(jax.random.PRNGKey(0), (5, 2))
    g = S.time_grid(sde, 4)
    for name in ("euler_maruyama", "ddim"):
        x, traj = S.get_sampler(name)(
            jax.random.PRNGKey(1), sf, sde, x_T, g, return_trajectory=True
        )
        assert traj.shape == (5, 5, 2)
        np.testing.assert_allclose(traj[0], x_T)
        np.testing.assert_allclose(traj[-1], x, rtol=1e-6)
    with pytest.raises(ValueError, match="time_grid"):
        S.euler_maruyama(jax.random.PRNGKey(0), sf, sde, x_T, jnp.linspace(1.0, 0.0, 5))
    with pytest.raises(ValueError, match="unknown sampler"):
        S.get_sampler("rk45")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["euler_maruyama", "pc", "heun", "ddim"])
def test_error_shrinks_with_steps(gmm2, bound2, h, method):
    sde = VPSDE()
    eds = []
    for steps in (2, 5, 20, 500):
        x = h.run_sampler(jax.random.PRNGKey(0), gmm2, 1.0, S.time_grid(sde, steps), sde, method)
        eds.append(h.ed_to_exact(gmm2, sde, x))
    print(method, [f"{e:.2e}" for e in eds], f"bound {bound2:.2e}")
    # coarse grids are visibly biased; the error falls below the null bound as steps grow
    assert eds[0] > bound2 and eds[0] > eds[2] and eds[-1] < bound2


@pytest.mark.slow
@pytest.mark.parametrize("method,order", [("heun", 2.0), ("ddim", 1.0)])
def test_ode_solvers_converge_pathwise(method, order):
    # From the same x_T, deterministic samplers converge to the adaptive solution at their
    # order (Gaussian target so the flow map is smooth): error ratio 40 -> 80 steps ~ 2^order.
    from models.gmm import GaussianMixture

    with jax.enable_x64(True):
        gauss = GaussianMixture(jnp.ones(1), jnp.array([[1.0, -0.5]]), jnp.array([[0.3, 0.6]]))
        sde = VPSDE()
        sf = gauss.score_fn(sde)
        x_T = sde.prior_sample(jax.random.PRNGKey(0), (64, 2)).astype(jnp.float64)
        ref = S.probability_flow_dopri5(
            None, sf, sde, x_T, S.time_grid(sde, 1), rtol=1e-10, atol=1e-10
        )
        errs = []
        for steps in (40, 80):
            x = S.get_sampler(method)(None, sf, sde, x_T, S.time_grid(sde, steps, "edm"))
            errs.append(float(jnp.mean(jnp.abs(x - ref))))
        rate = np.log2(errs[0] / errs[1])
        assert abs(rate - order) < 0.4, (errs, rate)


@pytest.mark.parametrize("unroll", [True, 4])
def test_euler_maruyama_unrolled_gives_the_same_draws(gmm2, unroll):
    """``unroll`` only changes how the loop is compiled: same keys, same numbers."""
    sde = VPSDE()
    sf = gmm2.score_fn(sde)
    x_T = sde.prior_sample(jax.random.PRNGKey(0), (64, 2))
    g = S.time_grid(sde, 12)
    rolled = S.euler_maruyama(jax.random.PRNGKey(1), sf, sde, x_T, g)
    unrolled = S.euler_maruyama(jax.random.PRNGKey(1), sf, sde, x_T, g, unroll=unroll)
    np.testing.assert_allclose(unrolled, rolled, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unroll must be"):
        S.euler_maruyama(jax.random.PRNGKey(1), sf, sde, x_T, g, unroll=0)
