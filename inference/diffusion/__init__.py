"""Score-based diffusion models in pure JAX: forward SDEs (VP, sub-VP, VE, EDM), score/eps/x0
parametrisations, reverse-time samplers (Euler-Maruyama, predictor-corrector, probability-flow
ODE with Heun or Dormand-Prince, DDIM), probability-flow ODE log densities, and two-sample
metrics. Score functions follow the batch convention ``score_fn(x (N, d), t) -> (N, d)``."""

from inference.diffusion.likelihood import ode_log_prob
from inference.diffusion.metrics import energy_distance, sliced_wasserstein
from inference.diffusion.samplers import (
    ddim,
    euler_maruyama,
    predictor_corrector,
    probability_flow_dopri5,
    probability_flow_heun,
    time_grid,
)
from inference.diffusion.sde import EDMSDE, SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "EDMSDE",
    "time_grid",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow_heun",
    "probability_flow_dopri5",
    "ddim",
    "ode_log_prob",
    "energy_distance",
    "sliced_wasserstein",
]
