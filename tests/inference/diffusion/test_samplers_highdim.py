"""Samplers on an 8-d, 3-component mixture with random full covariances (acceptance rule in
``conftest.py``)."""

import pytest

from inference.diffusion.sde import VESDE, VPSDE


@pytest.mark.parametrize(
    "sde,method,steps,grid",
    [(VPSDE(), "euler_maruyama", 500, "uniform"), (VPSDE(), "heun", 100, "edm")],
    ids=["vp-em", "vp-heun"],
)
def test_highdim_sampler_matches_exact(gmm8, bound8, h, sde, method, steps, grid):
    h.check_sampler(gmm8, bound8, sde, method, steps, grid, controls=(2.0,))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sde,method,steps,grid",
    [
        (VPSDE(), "ddim", 200, "uniform"),
        (VPSDE(), "pc", 500, "uniform"),
        (VESDE(), "euler_maruyama", 500, "uniform"),
        (VESDE(), "heun", 100, "edm"),
    ],
)
def test_highdim_matrix(gmm8, bound8, h, sde, method, steps, grid):
    h.check_sampler(gmm8, bound8, sde, method, steps, grid, controls=(2.0,))
