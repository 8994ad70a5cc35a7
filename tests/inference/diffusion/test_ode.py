"""ODE integrators against closed-form solutions and their convergence orders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inference.diffusion.ode import odeint_dopri5, odeint_grid


def rhs(t, y):
    return {"a": -y["a"], "b": jnp.cos(t) * jnp.ones_like(y["b"])}


Y0 = {"a": jnp.ones(2), "b": jnp.zeros(3)}


def test_dopri5_exact_and_backwards():
    with jax.enable_x64(True):
        y0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), Y0)
        y, info = odeint_dopri5(rhs, y0, 0.0, 2.0, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(y["a"], np.exp(-2.0), rtol=1e-9)
        np.testing.assert_allclose(y["b"], np.sin(2.0), rtol=1e-9)
        assert bool(info.success) and int(info.n_accepted) > 5
        yb, _ = odeint_dopri5(rhs, y, 2.0, 0.0, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(yb["a"], 1.0, rtol=1e-8)
        np.testing.assert_allclose(yb["b"], 0.0, atol=1e-8)


def test_dopri5_max_steps_reports_failure():
    _, info = odeint_dopri5(rhs, Y0, 0.0, 2.0, rtol=1e-12, atol=1e-12, max_steps=3)
    assert not bool(info.success)


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2), ("rk4", 4)])
def test_fixed_grid_orders(method, order):
    with jax.enable_x64(True):
        y0 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), Y0)
        errs = []
        for n in (20, 40):
            y = odeint_grid(rhs, y0, jnp.linspace(0.0, 2.0, n + 1), method)
            errs.append(abs(float(y["a"][0]) - np.exp(-2.0)))
        rate = np.log2(errs[0] / errs[1])
        assert abs(rate - order) < 0.3, (method, rate)
        y, path = odeint_grid(rhs, y0, jnp.linspace(0.0, 2.0, 11), method, return_path=True)
        assert path["a"].shape == (11, 2)
        np.testing.assert_allclose(path["a"][-1], y["a"])
