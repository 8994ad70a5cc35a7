"""Compiled programs are reused only when nothing they depend on changed: the model function,
its data, and the values it reads from its globals and closure (a prior scale, an operator
``A``). Changing such a global between calls used to reuse the stale program."""

import functools
import importlib

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

import ppl
from ppl.model import function_fingerprint, program_fingerprint

# the modules (``ppl.smc`` is also the name of the entry point)
inverse = importlib.import_module("ppl.inverse")
mcmc_sampler = importlib.import_module("ppl.mcmc_sampler")
smc = importlib.import_module("ppl.smc")

PRIOR_LOC = 0.0
OPERATOR = np.array([[1.0, 1.0]])
SETTINGS = {"scale": 2.0}


def _helper_scale():
    return SETTINGS["scale"]


def global_prior(y):
    mu = ppl.sample("mu", dist.Normal(PRIOR_LOC, 1.0))
    ppl.sample("y", dist.Normal(mu, 1.0), obs=y)


def reads_operator_through_a_helper(y):
    x = ppl.sample("x", dist.Normal(jnp.zeros(2), _helper_scale()).to_event(1))
    ppl.sample("y", dist.Normal(jnp.asarray(OPERATOR) @ x, 1.0), obs=y)


def test_the_fingerprint_follows_globals_closures_and_helpers(monkeypatch):
    before = program_fingerprint(global_prior, (1.0,))
    assert program_fingerprint(global_prior, (1.0,)) == before
    monkeypatch.setattr(f"{__name__}.PRIOR_LOC", 5.0)
    assert program_fingerprint(global_prior, (1.0,)) != before
    assert program_fingerprint(global_prior, (2.0,)) != program_fingerprint(global_prior, (1.0,))

    before = function_fingerprint(reads_operator_through_a_helper)
    monkeypatch.setattr(f"{__name__}.OPERATOR", np.array([[1.0, -1.0]]))  # array content
    after_operator = function_fingerprint(reads_operator_through_a_helper)
    assert after_operator != before
    monkeypatch.setitem(SETTINGS, "scale", 3.0)  # a dict read by a called helper
    assert function_fingerprint(reads_operator_through_a_helper) != after_operator

    def closure(scale):
        def model(y):
            ppl.sample("y", dist.Normal(ppl.sample("m", dist.Normal(0, scale)), 1.0), obs=y)

        return model

    assert function_fingerprint(closure(1.0)) != function_fingerprint(closure(2.0))
    assert function_fingerprint(functools.partial(global_prior)) == function_fingerprint(
        functools.partial(global_prior)
    )


def test_an_unsummarisable_global_means_no_reuse(monkeypatch):
    monkeypatch.setattr(f"{__name__}.PRIOR_LOC", [object(), [1, {2}]])  # unhashable
    assert program_fingerprint(global_prior, (1.0,)) != program_fingerprint(global_prior, (1.0,))


def test_each_entry_point_keys_its_program_by_the_globals(monkeypatch):
    nuts = mcmc_sampler.get_kernel("nuts")
    program = mcmc_sampler._program(global_prior, (1.0,), {}, nuts, 1, 10, 20, 20)
    assert mcmc_sampler._program(global_prior, (1.0,), {}, nuts, 1, 10, 20, 20) is program
    tempered = smc._cache_key(global_prior, (1.0,), {}, {"particles": 10}, 5)
    linear = inverse._cache_key(reads_operator_through_a_helper, (np.zeros(1),), {}, "tds")
    monkeypatch.setattr(f"{__name__}.PRIOR_LOC", 5.0)
    monkeypatch.setattr(f"{__name__}.OPERATOR", np.array([[1.0, -1.0]]))
    assert mcmc_sampler._program(global_prior, (1.0,), {}, nuts, 1, 10, 20, 20) is not program
    assert smc._cache_key(global_prior, (1.0,), {}, {"particles": 10}, 5) != tempered
    assert inverse._cache_key(reads_operator_through_a_helper, (np.zeros(1),), {}, "tds") != linear


def test_a_changed_global_changes_the_posterior(monkeypatch):
    """End to end: the second call sees the new prior location (posterior mean (loc + y) / 2)."""
    run = dict(chains=2, warmup=200, draws=200, seed=0, progress_bar=False)
    first = ppl.mcmc(global_prior, 1.0, **run).samples["mu"].mean()
    monkeypatch.setattr(f"{__name__}.PRIOR_LOC", 9.0)
    second = ppl.mcmc(global_prior, 1.0, **run).samples["mu"].mean()
    assert abs(first - 0.5) < 0.3 and abs(second - 5.0) < 0.3, (first, second)
