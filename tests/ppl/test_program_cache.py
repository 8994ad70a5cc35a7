"""Compiled programs are reused only when nothing they depend on changed: the model function,
its data, and the values it reads from its globals and closure (a prior scale, an operator
``A``), from the object of a bound method or a callable object, and from the attributes of a
config object. Changing such a value between calls used to reuse the stale program; an array
changed in place used to be read stale by JAX itself. Checkpoints carry a process-independent
digest of the same, so that a run is not resumed on other data."""

import functools
import importlib

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import ppl
from ppl.model import function_fingerprint, program_fingerprint, stable_digest

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


def test_two_functions_reading_the_same_globals_have_their_own_programs():
    def first(y):
        ppl.sample("y", dist.Normal(ppl.sample("m", dist.Normal(0.0, 1.0)), 1.0), obs=y)

    def second(y):
        ppl.sample("y", dist.Normal(ppl.sample("m", dist.Normal(5.0, 1.0)), 1.0), obs=y)

    assert program_fingerprint(first, (1.0,)) != program_fingerprint(second, (1.0,))


def test_an_unsummarisable_global_means_no_reuse(monkeypatch):
    monkeypatch.setattr(f"{__name__}.PRIOR_LOC", [object(), [1, {2}]])  # unhashable
    assert program_fingerprint(global_prior, (1.0,)) != program_fingerprint(global_prior, (1.0,))


def _helpers_reading_prior_loc(levels: int):
    """A model whose prior location is read ``levels`` helper calls down."""

    def read():
        return PRIOR_LOC

    def calling(inner):
        def call():
            return inner()

        return call

    for _ in range(levels - 1):
        read = calling(read)

    def model():
        ppl.sample("x", dist.Normal(read(), 1.0))

    return model


def test_a_global_read_deep_in_helper_calls_is_seen_or_disables_reuse(monkeypatch):
    """A global read 6 helper calls down is followed; past ``FINGERPRINT_DEPTH`` the program
    is not reused (it used to be: a global read 5 calls down kept the stale program)."""
    shallow, deep = _helpers_reading_prior_loc(6), _helpers_reading_prior_loc(12)
    before = program_fingerprint(shallow)
    assert program_fingerprint(shallow) == before
    monkeypatch.setattr(f"{__name__}.PRIOR_LOC", 5.0)
    assert program_fingerprint(shallow) != before
    assert program_fingerprint(deep) != program_fingerprint(deep)


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


class Config:
    def __init__(self):
        self.loc = 0.0


class Settings:  # a class used as a namespace
    scale = 1.0


CONFIG = Config()


def reads_a_class_attribute(y):
    ppl.sample("y", dist.Normal(ppl.sample("m", dist.Normal(0.0, Settings.scale)), 1.0), obs=y)


def reads_a_config_object(y):
    ppl.sample("y", dist.Normal(ppl.sample("m", dist.Normal(CONFIG.loc, 1.0)), 1.0), obs=y)


class Regression:
    def __init__(self, y):
        self.y = y

    def model(self):
        mu = ppl.sample("mu", dist.Normal(0.0, 10.0))
        with ppl.plate("n", len(self.y)):
            ppl.sample("y", dist.Normal(mu, 1.0), obs=self.y)

    def __call__(self):
        self.model()


def test_objects_are_followed_into_their_attributes():
    """A config object read as a global, the object of a bound method, a callable object."""
    before = program_fingerprint(reads_a_config_object, (1.0,))
    CONFIG.loc = 10.0
    try:
        assert program_fingerprint(reads_a_config_object, (1.0,)) != before
    finally:
        CONFIG.loc = 0.0
    assert program_fingerprint(reads_a_config_object, (1.0,)) == before
    before = program_fingerprint(reads_a_class_attribute, (1.0,))
    Settings.scale = 3.0
    try:
        assert program_fingerprint(reads_a_class_attribute, (1.0,)) != before
    finally:
        Settings.scale = 1.0

    reg = Regression(np.zeros(3))
    method, call = program_fingerprint(reg.model), program_fingerprint(reg)
    assert program_fingerprint(reg.model) == method and program_fingerprint(reg) == call
    reg.y = np.ones(3)
    assert program_fingerprint(reg.model) != method and program_fingerprint(reg) != call
    # a fresh object with the same contents reuses the program
    assert program_fingerprint(Regression(np.ones(3)).model) == program_fingerprint(reg.model)
    assert program_fingerprint(Regression(np.ones(3))) == program_fingerprint(reg)


def test_a_users_settings_module_is_followed_into_the_attributes_read(monkeypatch):
    """``import settings; Normal(settings.LOC, 1)``: a module of the user's is its attributes
    that the model reads (a change to another attribute keeps the program; library modules
    such as ``jnp`` stay by identity). The program used to be kept after ``settings.LOC``
    changed (posterior mean 0.08 where 10 was right)."""
    import sys
    import types

    settings = types.ModuleType("user_settings_for_a_test")
    settings.LOC, settings.UNUSED = 0.0, np.zeros(3)
    settings.nested = types.ModuleType("user_settings_for_a_test.nested")
    settings.nested.SCALE = 1.0
    monkeypatch.setitem(sys.modules, settings.__name__, settings)
    monkeypatch.setitem(globals(), "user_settings", settings)

    def reads_settings():
        scale = user_settings.nested.SCALE  # noqa: F821 - the module set above
        ppl.sample("x", dist.Normal(user_settings.LOC, scale))  # noqa: F821

    before = program_fingerprint(reads_settings)
    settings.UNUSED[:] = 1.0
    assert program_fingerprint(reads_settings) == before
    settings.nested.SCALE = 2.0
    assert program_fingerprint(reads_settings) != before
    settings.nested.SCALE = 1.0
    assert program_fingerprint(reads_settings) == before
    run = dict(chains=2, warmup=100, draws=200, seed=0, progress_bar=False)
    first = ppl.mcmc(reads_settings, **run).samples["x"].mean()
    settings.LOC = 10.0
    second = ppl.mcmc(reads_settings, **run).samples["x"].mean()
    assert abs(first) < 0.5 and abs(second - 10.0) < 0.5, (first, second)
    assert stable_digest(reads_settings) is not None


def test_bound_method_and_array_changed_in_place_change_the_posterior():
    """End to end (posterior mean 50 ybar / 51 with 5 points, prior sd 10, noise sd 1)."""
    run = dict(chains=2, warmup=200, draws=200, seed=0, progress_bar=False)
    reg = Regression(np.zeros(5))
    first = ppl.mcmc(reg.model, **run).samples["mu"].mean()
    reg.y[:] = 4.0  # in place: JAX kept the old device copy until its caches were cleared
    second = ppl.mcmc(reg.model, **run).samples["mu"].mean()
    assert abs(first) < 0.3 and abs(second - 4.0 * 125 / 126) < 0.3, (first, second)


def test_stable_digest_is_the_same_for_equal_inputs_and_names_no_address():
    y = np.arange(3.0)
    assert stable_digest(global_prior, (y,)) == stable_digest(global_prior, (y.copy(),))
    assert stable_digest(global_prior, (y,)) != stable_digest(global_prior, (y + 1,))
    digest = stable_digest(Regression(y).model)
    assert digest == stable_digest(Regression(y.copy()).model)  # another object, same contents
    assert digest != stable_digest(Regression(y + 1).model)


def test_stable_digest_is_the_same_in_another_process():
    """Checkpoints are resumed by a new process: the digest must not hold an address or id."""
    import subprocess
    import sys
    from pathlib import Path

    # the module under the name pytest gave it (qualified names are part of the digest)
    module = Regression.__module__
    root = Path(__file__).parents[module.count(".")]
    script = (
        f"import sys, importlib; sys.path.insert(0, {str(root)!r}); import numpy as np; "
        f"m = importlib.import_module({module!r}); "
        "from ppl.model import stable_digest; "
        "print(stable_digest(m.Regression(np.zeros(3)).model), "
        "stable_digest(m.reads_a_config_object, (1.0,)))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    here_digests = f"{stable_digest(Regression(np.zeros(3)).model)} "
    here_digests += f"{stable_digest(reads_a_config_object, (1.0,))}"
    assert out.stdout.strip() == here_digests


FRAME = None  # set by the test: a pandas DataFrame read as a global
QUEUE = None  # set by the test: a container that cannot be digested


def reads_a_data_frame():
    ppl.sample("y", dist.Normal(0.0, 1.0), obs=FRAME["x"].to_numpy())


def reads_a_queue():
    ppl.sample("y", dist.Normal(0.0, 1.0), obs=np.array(QUEUE))


def test_data_frames_by_content_and_undigestable_inputs_refuse_checkpoints(monkeypatch):
    """A DataFrame global used to crash the fingerprint (its attributes hold a dict with
    unorderable keys); it is taken by its contents. A checkpoint of a model reading a value
    that cannot be digested is refused up front: it could not tell whether its data changed."""
    import collections

    import pandas as pd

    from ppl.checkpoint import inputs_digest

    monkeypatch.setattr(f"{__name__}.FRAME", pd.DataFrame({"x": [1.0, 2.0], "g": ["a", "b"]}))
    before = program_fingerprint(reads_a_data_frame)
    assert program_fingerprint(reads_a_data_frame) == before and stable_digest(reads_a_data_frame)
    FRAME.loc[0, "x"] = 5.0
    assert program_fingerprint(reads_a_data_frame) != before

    monkeypatch.setattr(f"{__name__}.QUEUE", collections.deque([1.0, 2.0]))
    with pytest.raises(ValueError, match="checkpoint= needs a digest"):
        inputs_digest(reads_a_queue, (), {})


TRANSITION_COEFFICIENT = 0.9
SCORE_MEAN = 3.0


def _ar1_transition(x, t):
    return dist.Normal(TRANSITION_COEFFICIENT * x, 0.5).to_event(1)


def _score(x, t):
    from inference.diffusion import VPSDE

    sde = VPSDE()
    mean = sde.marginal_mean_coeff(t) * SCORE_MEAN
    return -(x - mean) / (sde.marginal_mean_coeff(t) ** 2 * 0.04 + sde.marginal_std(t) ** 2)


def test_filters_and_diffusion_samplers_see_a_changed_global():
    """The particle filter, ``sample_diffusion`` and FKC compositions cached their programs by
    the model / prior / composition object: a global their functions read, changed between
    calls, was ignored (the filter kept log p(y) -12.05 where -38.99 was right; a prior whose
    mean moved from +3 to -3 still sampled +3.02). Identical calls still reuse the program."""
    global TRANSITION_COEFFICIENT, SCORE_MEAN
    from inference.diffusion import VPSDE

    ssm = ppl.StateSpaceModel(
        lambda: dist.Normal(jnp.zeros(1), 1.0).to_event(1),
        _ar1_transition,
        lambda x, t: dist.Normal(x, 0.3).to_event(1),
    )
    ys = np.sin(np.arange(12.0))[:, None]
    prior = ppl.DiffusionPrior(_score, VPSDE(), event_shape=(1,))
    target = ppl.anneal(prior, 2.0)

    def inverse_problem(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, 1.0).to_event(1), obs=y)

    def run():
        options = dict(num_samples=200, steps=30, seed=0, progress_bar=False)
        posterior = ppl.smc(
            inverse_problem, y=np.zeros(1), particles=200, steps=30, seed=0, progress_bar=False
        )
        return (
            ppl.particle_filter(ssm, ys, particles=200, seed=0).log_likelihood,
            float(np.mean(ppl.sample_diffusion(prior, **options).samples)),
            float(np.mean(ppl.sample_diffusion(target, **options).samples)),
            float(np.mean(posterior.samples["x"])),  # the inverse problem's program too
        )

    try:
        before = run()
        assert run() == before and len(prior._sample_cache) == 1  # reused
        TRANSITION_COEFFICIENT, SCORE_MEAN = -0.9, -3.0
        after = run()
    finally:
        TRANSITION_COEFFICIENT, SCORE_MEAN = 0.9, 3.0
    fresh = ppl.StateSpaceModel(
        ssm.init, lambda x, t: dist.Normal(-0.9 * x, 0.5).to_event(1), ssm.observation
    )
    assert after[0] == ppl.particle_filter(fresh, ys, particles=200, seed=0).log_likelihood
    assert after[0] < before[0] - 5
    assert before[1] > 2.5 and after[1] < -2.5 and before[2] > 2.5 and after[2] < -2.5
    assert before[3] > 2.5 and after[3] < -2.5  # exact posterior means +-2.88
