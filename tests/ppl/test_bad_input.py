"""Property-based: malformed input to the entry points gives a clear error naming it.

Every example is invalid by construction, so each call must raise ``ValueError`` or
``TypeError`` whose message names the argument or site — never an internal traceback from
deep inside JAX, and never a silent NaN result.
"""

import os

import numpy as np
import numpyro
import numpyro.distributions as dist
from hypothesis import given, settings
from hypothesis import strategies as st

import ppl

Y = np.array([0.5, -0.2, 1.3])


def _examples(default: int) -> int:
    """Hypothesis examples per property: PPL_HYPOTHESIS_EXAMPLES=300 for a deeper local search."""
    return int(os.environ.get("PPL_HYPOTHESIS_EXAMPLES", default))


def model(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("n", 3):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


bad_counts = st.one_of(
    st.integers(max_value=0),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
)
bad_seeds = st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3), st.none())


def _raises_naming(call, *names):
    try:
        call()
    except (ValueError, TypeError) as err:
        message = str(err)
        assert any(name in message for name in names), message
        return
    raise AssertionError("no error was raised")


@settings(max_examples=_examples(25), deadline=None)
@given(
    argument=st.sampled_from(["chains", "draws", "warmup"]),
    value=bad_counts,
)
def test_mcmc_counts(argument, value):
    if argument == "warmup" and isinstance(value, int) and not isinstance(value, bool):
        value = min(value, -1)  # warmup = 0 is valid
    _raises_naming(lambda: ppl.mcmc(model, y=Y, progress_bar=False, **{argument: value}), argument)


@settings(max_examples=_examples(15), deadline=None)
@given(seed=bad_seeds)
def test_seed(seed):
    _raises_naming(lambda: ppl.mcmc(model, y=Y, seed=seed, progress_bar=False), "seed")
    _raises_naming(lambda: ppl.smc(model, y=Y, seed=seed), "seed")


@settings(max_examples=_examples(15), deadline=None)
@given(value=bad_counts, argument=st.sampled_from(["particles", "runs", "max_stages"]))
def test_smc_counts(value, argument):
    _raises_naming(lambda: ppl.smc(model, y=Y, **{argument: value}), argument)


@settings(max_examples=_examples(20), deadline=None)
@given(
    position=st.integers(0, 2),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    shape_change=st.booleans(),
)
def test_observed_data_nan_inf_or_wrong_shape(position, bad, shape_change):
    y = Y.copy()
    if shape_change:
        y = np.concatenate([y, y])  # 6 values for a plate of 3
    else:
        y[position] = bad
    _raises_naming(lambda: ppl.mcmc(model, y=y, progress_bar=False), "'y'")
    _raises_naming(lambda: ppl.smc(model, y=y), "'y'")


@settings(max_examples=_examples(15), deadline=None)
@given(
    kernel=st.one_of(
        st.text(max_size=6).filter(lambda s: s.lower() not in ("nuts", "hmc", "mala", "rwmh")),
        st.integers(),
    )
)
def test_unknown_kernel(kernel):
    _raises_naming(lambda: ppl.mcmc(model, y=Y, kernel=kernel, progress_bar=False), "kernel")


def scale_model(y=None):
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("n", 3):
        numpyro.sample("y", dist.Normal(0.0, sigma), obs=y)


@settings(max_examples=_examples(20), deadline=None)
@given(
    value=st.one_of(
        st.floats(max_value=0.0),  # outside the support (or NaN)
        st.floats(allow_nan=False).map(lambda v: [v, v, v]),  # wrong shape
        st.just("a"),
        st.just([None, 1.0]),
    )
)
def test_init_values_are_checked_by_site(value):
    """Checked before anything is compiled: the error names init['sigma']."""
    _raises_naming(
        lambda: ppl.mcmc(scale_model, y=Y, init={"sigma": value}, progress_bar=False),
        "init['sigma']",
    )


@settings(max_examples=_examples(20), deadline=None)
@given(
    data=st.one_of(
        st.sampled_from([[0, 1, 2], [1, -1, 0], [0.5, 1, 1]]),  # outside {0, 1}
        st.just(np.array([1, None, 0], dtype=object)),  # a missing value as None
    )
)
def test_observed_values_outside_the_support_are_named(data):
    def coin(y):
        p = numpyro.sample("p", dist.Beta(1.0, 1.0))
        with numpyro.plate("n", 3):
            numpyro.sample("flips", dist.Bernoulli(p), obs=y)

    _raises_naming(lambda: ppl.mcmc(coin, np.asarray(data), progress_bar=False), "'flips'")
    # the plate wraps it in an ExpandedDistribution; the message names what the user wrote
    _raises_naming(lambda: ppl.mcmc(coin, np.array([0, 2, 1])), "its Bernoulli (")


def _model_with_draws(y, draws):
    model(y)


def _model_with_seed(y, seed=0):
    model(y)


def test_a_model_parameter_named_like_a_sampler_keyword_is_named():
    """``ppl.mcmc(model, y, draws=10)`` takes ``draws`` itself; a model that needs its own
    ``draws`` is refused before compiling, one with a default is warned about, and the
    unambiguous spellings (by position, ``functools.partial``) pass silently."""
    import functools
    import warnings

    import pytest

    from ppl.validation import check_model_keywords

    with pytest.raises(TypeError, match=r"model parameter 'draws'.*ppl\.mcmc"):
        ppl.mcmc(_model_with_draws, Y, draws=10)
    with pytest.raises(TypeError, match=r"model parameter 'steps'.*ppl\.smc"):
        ppl.smc(lambda y, steps: model(y), Y, steps=10)
    with pytest.raises(TypeError, match="model parameter 'seed'"):
        ppl.predictive(lambda y, seed: model(y), Y, num_samples=5)
    with pytest.warns(UserWarning, match="model runs with its default seed=0"):
        with pytest.raises(ValueError, match="particles"):  # the check comes first
            ppl.smc(_model_with_seed, Y, seed=1, particles=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model_keywords(_model_with_draws, (Y, 5), ppl.mcmc)
        check_model_keywords(functools.partial(_model_with_draws, draws=5), (Y,), ppl.mcmc)
        check_model_keywords(functools.partial(_model_with_seed, seed=3), (Y,), ppl.smc)
        check_model_keywords(model, (), ppl.mcmc)


def test_numpyros_names_for_the_samplers_keywords_are_pointed_to_ours():
    """``num_warmup=`` (numpyro's MCMC) would go to the model as an unknown keyword: refused
    naming ``warmup=``; a model with ``**kwargs`` would swallow it: warned."""
    import pytest

    with pytest.raises(TypeError, match=r"num_warmup=, numpyro's name .* use warmup="):
        ppl.mcmc(model, Y, num_warmup=10)
    with pytest.raises(TypeError, match=r"use particles="):
        ppl.smc(model, Y, num_particles=10)

    def swallowing(y=None, **options):
        model(y)

    with pytest.warns(UserWarning, match=r"num_samples=.*draws=.*\*\*kwargs took it"):
        with pytest.raises(ValueError, match="chains"):  # the check comes first
            ppl.mcmc(swallowing, Y, num_samples=10, chains=0)


def test_seeds_beyond_32_bits_are_their_own_and_beyond_64_refused():
    """``PRNGKey(2**32)`` is ``PRNGKey(0)`` without x64 (the high bits were dropped, so seed
    2**32 repeated seed 0's draws); 2**63 crashed with an OverflowError."""
    import pytest

    from ppl.validation import check_seed

    keys = {int(s): tuple(np.asarray(check_seed(s))) for s in (0, 1, 2**32, 2**32 + 1, 2**40)}
    assert len(set(keys.values())) == len(keys)
    assert keys[1] == tuple(np.asarray(__import__("jax").random.PRNGKey(1)))  # unchanged
    assert np.asarray(check_seed(2**63 + 5)).tolist() == [2**31, 5]  # was an OverflowError
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        check_seed(2**64)


def test_list_and_float_label_observations():
    """A list ``obs=`` failed inside the compiled program (a list minus a tracer); float labels
    of a Categorical failed in ``take_along_axis``; non-integral labels now get the support
    refusal naming the site. The densities are those of the same data as integer arrays."""
    import jax.numpy as jnp
    import pytest

    from ppl.model import compile_model

    def labels(y):
        w = numpyro.sample("w", dist.Dirichlet(jnp.ones(3)))
        with numpyro.plate("n", len(y)):
            numpyro.sample("y", dist.Categorical(w), obs=y)

    flat = jnp.array([0.3, -0.4])
    reference = compile_model(labels, (np.array([0, 2, 1, 2]),)).logdensity(flat)
    for y in ([0, 2, 1, 2], np.array([0.0, 2.0, 1.0, 2.0])):
        np.testing.assert_allclose(compile_model(labels, (y,)).logdensity(flat), reference)
    with pytest.raises(ValueError, match="'y' has 1 value.*outside the support of its Categorical"):
        compile_model(labels, (np.array([0.0, 2.0, 1.5, 2.0]),))
    reference = compile_model(model, (Y,)).logdensity(flat[:1])
    np.testing.assert_allclose(compile_model(model, (list(Y),)).logdensity(flat[:1]), reference)


def test_predictive_refuses_what_it_used_to_ignore_or_fail_on_raw():
    import pytest

    posterior = ppl.Posterior(
        samples={"mu": np.linspace(-1, 1, 6).reshape(2, 3)}, observed_data={"y": Y}
    )
    with pytest.raises(ValueError, match=r"unknown site\(s\) \['nope'\]"):
        ppl.predictive(model, return_sites=["nope"])  # returned {}
    with pytest.raises(TypeError, match=r"write \['y'\]"):
        ppl.predictive(model, return_sites="y")  # a bare AssertionError in numpyro
    with pytest.raises(TypeError, match="numpyro's name for its keyword seed="):
        ppl.predictive(model, rng_key=1)
    with pytest.raises(RuntimeError, match="the model raised while being traced"):
        ppl.predictive(lambda: 1 / 0)
    with pytest.raises(ValueError, match="num_samples is for the prior predictive"):
        ppl.predictive(model, posterior=posterior, num_samples=7)  # was ignored

    def other(y=None):  # the posterior holds 'mu' only: drew mu2 from its prior silently
        mu2 = numpyro.sample("mu2", dist.Normal(100.0, 1.0))
        numpyro.sample("y", dist.Normal(mu2, 1.0), obs=y)

    def extended(y=None):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        shift = numpyro.sample("shift", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + shift, 1.0), obs=y)

    asked = ppl.predictive(model, posterior=posterior, y=None, return_sites=["mu", "y"])
    assert sorted(asked) == ["mu", "y"]  # a latent site asked for by name was dropped
    np.testing.assert_allclose(asked["mu"], posterior.samples["mu"], rtol=1e-6)  # float32
    with pytest.raises(ValueError, match="holds none of the model's sites"):
        ppl.predictive(other, posterior=posterior, y=None)
    with pytest.warns(UserWarning, match=r"latent site\(s\) \['shift'\].*drawn from their prior"):
        ppl.predictive(extended, posterior=posterior, y=None)


def test_flags_thresholds_and_names_are_checked():
    """``dense_mass="no"`` ran as True; ``diagnose(max_rhat="a")`` failed inside NumPy and
    ``max_rhat=-1`` was taken; ``to_arviz(var_name=3)`` was taken."""
    import pytest

    with pytest.raises(TypeError, match="dense_mass must be True or False, got 'no'"):
        ppl.smc(model, y=Y, particles=10, dense_mass="no")
    with pytest.raises(TypeError, match="progress_bar must be True or False"):
        ppl.mcmc(model, y=Y, progress_bar="yes")
    with pytest.raises(TypeError, match="log_likelihood must be True or False"):
        ppl.mcmc(model, y=Y, log_likelihood=None)
    post = ppl.mcmc(model, y=Y, chains=2, warmup=20, draws=10, progress_bar=False)
    with pytest.raises(TypeError, match="max_rhat must be a real number"):
        post.diagnose(max_rhat="a")
    with pytest.raises(ValueError, match="max_rhat must be > 1.0"):
        post.diagnose(max_rhat=-1)
    ssm = ppl.StateSpaceModel(
        lambda: dist.Normal(0.0, 1.0),
        lambda x, t: dist.Normal(0.9 * x, 0.5),
        lambda x, t: dist.Normal(x, 0.3),
    )
    pf = ppl.particle_filter(ssm, np.zeros(4), particles=16)
    with pytest.raises(TypeError, match="var_name must be a non-empty string"):
        pf.to_arviz(var_name=3)
