"""Test-suite settings shared by every module.

* Hypothesis draws its examples from a fixed seed (``derandomize=True``), so the property tests
  are as deterministic as the others: the same examples on every run and every machine. Set
  ``HYPOTHESIS_PROFILE=explore`` to draw fresh random examples (and keep a failure database).
* XLA compiles the tests' programs with most optimisations off
  (``jax_disable_most_optimizations``): the suite is dominated by compiling many small
  programs, and this cut it from 1436 s to 1177 s on one core. The algorithms and their
  tolerances are the same; only floating-point rounding can differ. Subprocesses (the devices
  test, tutorials, benchmarks) keep the default. ``PPL_TEST_XLA_OPTIMIZE=1`` restores full
  optimisation here too.
"""

import os

import jax
from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

if os.environ.get("PPL_TEST_XLA_OPTIMIZE", "0") != "1":
    jax.config.update("jax_disable_most_optimizations", True)
