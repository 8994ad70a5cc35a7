"""Property-based: malformed input to the state-space and diffusion entry points.

``ppl.particle_filter``, ``ppl.pmmh``, ``ppl.StateSpaceModel``, ``ppl.DiffusionPrior`` (and its
``score``), ``ppl.sample_diffusion`` and the compositions ``ppl.anneal / product / geometric /
guided / superpose``. Each example mixes valid and malformed arguments (wrong types and
shapes, NaN/inf observations, non-positive counts, unknown option strings, score functions of
the wrong output shape, times outside the SDE's range, user functions that raise) and tracks
which arguments are malformed. The property: with any malformed argument the call raises
``ValueError``, ``TypeError`` or ``FloatingPointError`` whose message names one of them; with
none it returns a finite result. Never another exception type, never a silent NaN.

Valid values are fixed where a new value would mean a new compilation (particle count,
method, steps), so the whole file compiles only a handful of small programs; PMMH and
composition sampling get only malformed calls (they are rejected before anything compiles).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppl
from inference.diffusion.sde import VESDE, VPSDE
from models import gmm_targets as gt
from models.gmm import GaussianMixture
from models.state_space import LinearGaussian

# PPL_HYPOTHESIS_EXAMPLES=300 for a deeper local search
SETTINGS = settings(
    max_examples=int(os.environ.get("PPL_HYPOTHESIS_EXAMPLES", 12)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ERRORS = (ValueError, TypeError, FloatingPointError)

LG = LinearGaussian(
    np.array([[0.9]]), np.eye(1), 0.5 * np.eye(1), 0.3 * np.eye(1), np.zeros(1), np.eye(1)
)
YS = np.asarray(LG.simulate(jax.random.key(0), 5)[1])  # (5, 1)
SDE = VPSDE()
G = GaussianMixture(jnp.array([0.5, 0.5]), jnp.array([[-0.5], [0.5]]), jnp.full(2, 0.25))
P1 = gt.exact_prior(G, SDE)
P2 = gt.exact_prior(GaussianMixture(jnp.ones(1), jnp.array([[0.5]]), jnp.full(1, 0.25)), SDE)
P_VE = gt.exact_prior(G, VESDE())
P_2D = DP_2D = ppl.DiffusionPrior(lambda x, t: -x, SDE, event_shape=(2,))


def _finite(x):
    leaves = jax.tree.leaves(x)
    assert leaves and all(np.all(np.isfinite(np.asarray(v))) for v in leaves), "silent NaN/inf"


def _check(call, bad: dict, result=lambda out: out):
    """``bad``: malformed argument -> words its error must contain (any one of them)."""
    try:
        out = call()
    except ERRORS as err:
        msg = str(err)
        assert bad, f"valid input raised {type(err).__name__}: {msg}"
        words = [w for ws in bad.values() for w in ws]
        assert any(w in msg for w in words), f"message names none of {words}: {msg}"
        return
    # any other exception type propagates and fails the test
    assert not bad, f"malformed {sorted(bad)} accepted"
    _finite(result(out))


class Args:
    """Draws which arguments to malform (none, one or two of ``names``), then their values;
    ``bad`` maps each malformed argument to the words its error must contain (any one)."""

    def __init__(self, draw, names, max_bad=2):
        self.draw, self.bad = draw, {}
        self.corrupt = draw(st.sets(st.sampled_from(sorted(names)), max_size=max_bad))

    def __call__(self, name, good, bads, words=None):
        if name not in self.corrupt:
            return good
        self.bad[name] = tuple(words or (name,))
        return self.draw(st.sampled_from(bads))


bad_counts = [0, -3, 2.5, "8", None, True, [8]]
bad_steps = [0, -3, 2.5, "8", True, [8]]  # steps=None means the default
bad_seeds = [-1, 1.5, "0", None, [0]]
bad_reals01 = [-0.1, 1.5, np.nan, np.inf, "0.5", None]


# --------------------------------------------------------------------------------------------
# particle_filter


def _raises(*_):
    raise RuntimeError("boom")


GOOD_FNS = {
    "init": lambda: dist.Normal(jnp.zeros(1), 1.0),
    "transition": lambda x, t: dist.Normal(0.9 * x, 0.5),
    "observation": lambda x, t: dist.Normal(x, 0.3),
}
BAD_FNS = {
    "init": [_raises, lambda: jnp.zeros(1), lambda: dist.Normal(jnp.zeros(1), 1.0).sample],
    "transition": [_raises, lambda x, t: dist.Normal(jnp.zeros(3), 1.0), lambda x, t: x],
    "observation": [_raises, lambda x, t: dist.Normal(jnp.zeros(2), 1.0), lambda x, t: x],
}


@SETTINGS
@given(st.data())
def test_particle_filter(data):
    draw = data.draw
    pick = Args(draw, ["ys", "particles", "method", "resampling", "ess_threshold", "seed", "ssm"])
    ys = pick(
        "ys",
        YS,
        [
            np.where(np.arange(5)[:, None] == 2, np.nan, YS),
            np.full_like(YS, np.inf),
            np.zeros((5, 3)),
            np.zeros(5),
            np.float64(1.0),
            np.zeros((0, 1)),
            "abc",
            [[1.0], [2.0, 3.0]],
            YS + 1j,
        ],
    )
    particles = pick("particles", 8, bad_counts)
    method = pick("method", "bootstrap", ["gibbs", "", None, 3, "guided"], ("method", "proposal"))
    resampling = pick("resampling", "systematic", ["sys", None, ["systematic"], 1])
    ess = pick("ess_threshold", draw(st.floats(0.0, 1.0)), bad_reals01)
    seed = pick("seed", draw(st.integers(0, 2**31 - 1)), bad_seeds)
    ssm = pick("ssm", LG, [object(), None, {"init": 1}], ("ssm", "StateSpaceModel"))
    _check(
        lambda: ppl.particle_filter(
            ssm,
            ys,
            particles=particles,
            method=method,
            resampling=resampling,
            ess_threshold=ess,
            seed=seed,
        ),
        pick.bad,
        lambda r: [r.log_likelihood, r.filter_means, r.log_weights],
    )


@SETTINGS
@given(st.data())
def test_user_functions_of_a_state_space_model(data):
    """A model function that raises, returns a non-distribution or a wrongly shaped one, or is
    not callable at all: the error names the function (at construction or before compiling)."""
    draw = data.draw
    pick = Args(draw, GOOD_FNS)
    fns = {name: pick(name, fn, [*BAD_FNS[name], 3, None]) for name, fn in GOOD_FNS.items()}
    bad = pick.bad
    proposal = None
    if draw(st.booleans()):  # a guided filter whose proposal is malformed
        proposal = draw(st.sampled_from([_raises, lambda x, y, t: dist.Normal(y * jnp.ones(2))]))
        bad["proposal"] = ("proposal",)
    if not bad:  # one malformed piece at least: a valid model would compile a new filter
        fns["transition"], bad["transition"] = _raises, ("transition",)
    _check(
        lambda: ppl.particle_filter(
            ppl.StateSpaceModel(fns["init"], fns["transition"], fns["observation"]),
            YS,
            particles=8,
            method="bootstrap" if proposal is None else "guided",
            proposal=proposal,
        ),
        bad,
    )


# --------------------------------------------------------------------------------------------
# pmmh: malformed calls only (a valid one compiles a chain)


def _builder(p):
    return LinearGaussian(
        jnp.reshape(p["phi"], (1, 1)),
        jnp.eye(1),
        0.5 * jnp.eye(1),
        0.3 * jnp.eye(1),
        jnp.zeros(1),
        jnp.eye(1),
    )


PMMH_BAD = {
    "ssm_builder": [None, 3, _raises, lambda p: "not a model"],
    "prior": [None, {}, [dist.Normal()], {"phi": 3.0}],
    "ys": [np.full((5, 1), np.nan), np.zeros((5, 2)), "abc", np.zeros((0, 1))],
    "draws": bad_counts,
    "particles": bad_counts,
    "chains": bad_counts,
    "warmup": [-1, 1.5, "0", None],
    "step_size": [0.0, -1.0, np.nan, np.inf, "0.1", None],
    "proposal_cov": [np.eye(2), -np.eye(1), np.full((1, 1), np.nan), "eye", [[1.0, 2.0]]],
    "method": ["guided", "gibbs", None, 1],
    "resampling": ["sys", None, 1],
    "init": [{"phi": 2.0}, {"phi": np.nan}, {"phi": np.zeros(3)}, {}, [0.5], "phi"],
    "seed": bad_seeds,
}


@SETTINGS
@given(st.data())
def test_pmmh(data):
    draw = data.draw
    kwargs = {
        "ssm_builder": _builder,
        "prior": {"phi": dist.Uniform(-1.0, 1.0)},
        "ys": YS,
        "draws": 5,
        "particles": 8,
        "chains": 2,
        "warmup": 0,
        "step_size": 0.1,
        "method": "bootstrap",
        "resampling": "systematic",
        "seed": 0,
    }
    names = draw(st.lists(st.sampled_from(sorted(PMMH_BAD)), min_size=1, max_size=3, unique=True))
    for name in names:
        kwargs[name] = draw(st.sampled_from(PMMH_BAD[name]))
    bad = {name: (name,) for name in names}
    if "method" in bad:
        bad["method"] += ("proposal",)
    if "prior" in bad:  # the builder then meets a malformed prior draw
        bad["prior"] += ("ssm_builder",)
    _check(lambda: ppl.pmmh(**kwargs), bad)


# --------------------------------------------------------------------------------------------
# StateSpaceModel, DiffusionPrior and its score


@SETTINGS
@given(st.data())
def test_state_space_model_constructor(data):
    pick = Args(data.draw, GOOD_FNS, max_bad=3)
    fns = {name: pick(name, fn, [None, 3, "f", [lambda: 0]]) for name, fn in GOOD_FNS.items()}
    _check(
        lambda: ppl.StateSpaceModel(fns["init"], fns["transition"], fns["observation"]),
        pick.bad,
        lambda m: [0.0],
    )


def _score(x, t):
    return -x


@SETTINGS
@given(st.data())
def test_diffusion_prior_and_score(data):
    draw = data.draw
    pick = Args(draw, ["score_fn", "sde", "event_shape", "steps", "sampler", "grid"])
    score_fn = pick(
        "score_fn",
        _score,
        [
            None,
            "score",
            lambda x, t: x.sum(-1),  # wrong output shape
            lambda x, t: jnp.zeros((3, 2)),
            lambda x, t: x * jnp.nan,  # non-finite
            lambda x, t: x if t > 0.5 else -x,  # Python control flow on a traced t
            _raises,
        ],
    )
    sde = pick("sde", SDE, [None, "vp", VPSDE], ("sde",))
    event_shape = pick("event_shape", (2,), [None, 0, (0,), (2, 2), "2", 2.5, (2.0,), [True]])
    steps = pick("steps", 10, bad_counts)
    sampler = pick("sampler", "euler_maruyama", ["langevin", None, 3, ["ode"]])
    grid = pick("grid", "uniform", ["log", 2])  # None is the SDE's default grid
    _check(
        lambda: ppl.DiffusionPrior(score_fn, sde, event_shape, steps, sampler, grid),
        pick.bad,
        lambda p: [p.dim],
    )
    # the score of a valid prior at a valid / malformed time and input
    pick = Args(draw, ["t", "x"])
    t = pick("t", draw(st.floats(SDE.t_min, SDE.t_max)), [0.0, 1.5, -1.0, np.nan, "t", None])
    x = pick("x", jnp.ones((3, 2)), [jnp.ones((3, 5)), jnp.ones(3)], ("x", "shape"))
    _check(lambda: DP_2D.score(x, t), pick.bad)


# --------------------------------------------------------------------------------------------
# sample_diffusion on a DiffusionPrior


@SETTINGS
@given(st.data())
def test_sample_diffusion(data):
    draw = data.draw
    pick = Args(draw, ["target", "num_samples", "steps", "seed", "method", "grid"])
    bad = pick.bad
    target = pick("target", DP_2D, [None, "prior", G, ppl.StateSpaceModel], ("target",))
    num_samples = pick("num_samples", 4, bad_counts)
    steps = pick("steps", 3, bad_steps)
    seed = pick("seed", draw(st.integers(0, 2**31 - 1)), bad_seeds)
    method = pick("method", None, ["langevin", 3, ["ode"]])
    grid = pick("grid", None, ["log", 2])
    extra = {}
    if draw(st.booleans()):
        extra = {"resampling": "systematic"}  # only meaningful for compositions
        bad["resampling"] = ("resampling", "unexpected")
    _check(
        lambda: ppl.sample_diffusion(
            target, num_samples, steps=steps, seed=seed, method=method, grid=grid, **extra
        ),
        bad,
        lambda r: r.samples,
    )


# --------------------------------------------------------------------------------------------
# compositions: constructors (no compilation), then malformed sampling calls


def _bad_beta(tau):
    return jnp.ones(2)


COMPOSE_CASES = {
    "anneal": (
        lambda v: ppl.anneal(v["prior"], v["beta"]),
        {
            "prior": (P1, [None, "p", G, 3]),
            "beta": (
                2.0,
                [
                    0.0,
                    -1.0,
                    np.nan,
                    np.inf,
                    "two",
                    None,
                    _raises,
                    _bad_beta,
                    lambda tau: 1.0 - 2.0 * tau,
                ],
            ),
        },
    ),
    "product": (
        lambda v: ppl.product(v["p1"], v["priors[1]"]),
        {"p1": (P1, [None, "p"]), "priors[1]": (P2, [None, G, P_VE, P_2D])},
    ),
    "geometric": (
        lambda v: ppl.geometric(v["p1"], v["p2"], v["weight"]),
        {
            "p1": (P1, [None, "p"]),
            "p2": (P2, [None, P_VE, P_2D]),
            "weight": (0.3, [np.nan, np.inf, "w", None, [0.5]]),
        },
    ),
    "guided": (
        lambda v: ppl.guided(v["cond"], v["uncond"], v["scale"]),
        {
            "cond": (P2, [None, P_VE]),
            "uncond": (P1, [None, P_2D]),
            "scale": (2.0, [-1.0, np.nan, "s", None]),
        },
    ),
    "superpose": (
        lambda v: ppl.superpose(
            v["p1"],
            v["priors[1]"],
            mode=v["mode"],
            weights=v["weights"],
            temperature=v["temperature"],
        ),
        {
            "p1": (P1, [None, ppl.anneal(P1, 2.0)]),
            "priors[1]": (P2, [P_VE, P_2D]),
            "mode": ("or", ["xor", None, 1]),
            "weights": (None, [[1.0, -1.0], [1.0], ["a", "b"], [np.nan, 1.0]]),
            "temperature": (1.0, [0.0, -1.0, np.nan, "hot", None]),
        },
    ),
}
WORDS = {"p1": ("p1", "priors[0]", "prior"), "priors[1]": ("priors[1]", "p2", "prior")}


@SETTINGS
@given(st.data())
def test_composition_constructors(data):
    draw = data.draw
    kind = draw(st.sampled_from(sorted(COMPOSE_CASES)))
    build, args = COMPOSE_CASES[kind]
    pick = Args(draw, args)
    values = {name: pick(name, good, bads, WORDS.get(name)) for name, (good, bads) in args.items()}
    bad = pick.bad
    for name in ("cond", "uncond", "prior"):
        if name in bad:
            bad[name] += ("SDE", "event shape")  # mismatched pairs name either side
    for name in ("p2", "priors[1]"):
        if name in bad:
            bad[name] += ("SDE", "event shape")
    _check(lambda: build(values), bad, lambda c: [0.0])


SAMPLE_BAD = {
    "num_samples": bad_counts,
    "steps": bad_steps,
    "seed": bad_seeds,
    "method": ["ddim", "langevin", 3],
    "resampling": ["sys", None, 1],
    "ess_threshold": bad_reals01,
    "resample_every": bad_counts,
    "unroll": [0, -2, 2.5, "8", None, [8]],
    "noise": ["gaussian", None, 0, -1.0, float("nan")],
    "window": [(0.5, 0.2), (-0.1, 0.5), (0.0, 1.5), (np.nan, 1.0), (0.1,), "all", 0.5],
    "grid": ["log", 2],  # None means the default
    "weighted": ["yes", None, 1],
    "bogus_option": [1],
}


@SETTINGS
@given(st.data())
def test_sample_diffusion_compositions(data):
    draw = data.draw
    target = draw(
        st.sampled_from(
            [ppl.anneal(P1, 2.0), ppl.product(P1, P2), ppl.superpose(P1, P2, mode="and")]
        )
    )
    kwargs = {"num_samples": 8, "steps": 3}
    names = draw(st.lists(st.sampled_from(sorted(SAMPLE_BAD)), min_size=1, max_size=3, unique=True))
    for name in names:
        kwargs[name] = draw(st.sampled_from(SAMPLE_BAD[name]))
    bad = {name: (name,) for name in names}
    if "window" in bad:
        bad["window"] += ("tau",)
    _check(lambda: ppl.sample_diffusion(target, **kwargs), bad)
