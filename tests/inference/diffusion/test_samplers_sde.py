"""Samplers under sub-VP, VE and EDM, the predictor-corrector and the adaptive ODE sampler,
vs exact 2-d mixture samples (acceptance rule in ``conftest.py``)."""

import pytest

from inference.diffusion.sde import EDMSDE, VESDE, VPSDE, SubVPSDE


@pytest.mark.parametrize(
    "sde,method,steps,grid",
    [
        (SubVPSDE(), "euler_maruyama", 500, "uniform"),
        (SubVPSDE(), "ddim", 200, "edm"),
        (VESDE(), "euler_maruyama", 500, "uniform"),
        (VESDE(), "pc", 500, "uniform"),
        (VESDE(), "heun", 100, "edm"),
        (VPSDE(), "dopri5", 1, "uniform"),
    ],
    ids=["subvp-em", "subvp-ddim", "ve-em", "ve-pc", "ve-heun", "vp-dopri5"],
)
def test_sampler_matches_exact(gmm2, bound2, h, sde, method, steps, grid):
    h.check_sampler(gmm2, bound2, sde, method, steps, grid, controls=(2.0,))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sde,method,steps,grid",
    [
        (VPSDE(), "pc", 500, "uniform"),
        (SubVPSDE(), "heun", 100, "edm"),
        (SubVPSDE(), "pc", 500, "uniform"),
        (VESDE(), "ddim", 200, "edm"),
        (VESDE(), "dopri5", 1, "uniform"),
        (EDMSDE(), "euler_maruyama", 500, "edm"),
        (EDMSDE(), "heun", 100, "edm"),
        (EDMSDE(), "ddim", 200, "edm"),
    ],
)
def test_sampler_matrix(gmm2, bound2, h, sde, method, steps, grid):
    h.check_sampler(gmm2, bound2, sde, method, steps, grid, controls=(2.0,))
