"""Test-suite settings shared by every module.

Hypothesis draws its examples from a fixed seed (``derandomize=True``), so the property tests
are as deterministic as the others: the same examples on every run and every machine. Set
``HYPOTHESIS_PROFILE=explore`` to draw fresh random examples (and keep a failure database).
"""

import os

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))
