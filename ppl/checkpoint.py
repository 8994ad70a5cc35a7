"""Checkpoint files: a pytree of arrays plus JSON metadata in one ``.npz``, written atomically.

No pickle anywhere: arrays are stored as plain ``.npz`` members (``allow_pickle=False`` on
load) and the metadata as a JSON string. A write goes to a temporary file in the same folder
that then replaces the target (``os.replace``), so an interrupted write never leaves a
truncated checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import jax
import numpy as np


def check_path(path) -> None:
    """``checkpoint=`` must be ``None`` or a file path (str / ``os.PathLike``) in an existing
    folder: refused before any compilation, not after the first chunk has run."""
    if path is None:
        return
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"checkpoint must be a file path (str), got {type(path).__name__}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"checkpoint={str(path)!r}: its folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"checkpoint={str(path)!r} is a folder; give a file path (.npz)")


def save(path: str, tree, meta: dict) -> None:
    """Write the leaves of ``tree`` and ``meta`` to ``path`` atomically."""
    leaves = jax.tree.leaves(tree)
    arrays = {f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays["meta"] = np.asarray(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=".ckpt-", suffix=".npz")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path: str, like) -> tuple[object, dict]:
    """Read a checkpoint; ``like`` is a pytree with the structure to rebuild."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        count = len([k for k in data.files if k.startswith("leaf_")])
        leaves = [data[f"leaf_{i}"] for i in range(count)]
    treedef = jax.tree.structure(like)
    if treedef.num_leaves != len(leaves):
        raise ValueError(
            f"checkpoint {path!r} holds {len(leaves)} arrays, expected {treedef.num_leaves}: "
            "it was written by a different run"
        )
    return jax.tree.unflatten(treedef, leaves), meta


def inputs_digest(model, args, kwargs) -> str:
    """What the run's numbers depend on besides its settings, for ``meta["inputs"]``: the
    model's data and the values it reads (:func:`ppl.model.stable_digest`, the same in every
    process). Raises ``ValueError`` before anything runs when they cannot be digested: a
    resumed run could not then tell whether its data changed."""
    from ppl.model import stable_digest

    digest = stable_digest(model, args, kwargs)
    if digest is None:
        raise ValueError(
            "checkpoint= needs a digest of the model's data and of the values it reads, to "
            "refuse resuming on other data; this model reads a value that cannot be digested "
            "(a container of arbitrary objects, such as a deque or a list of objects): pass "
            "it as an array argument, or run without checkpoint="
        )
    return digest


def values_digest(values: dict | None) -> str | None:
    """A digest of named array values (``init=``) for a checkpoint's settings; ``None`` for
    none given."""
    if values is None:
        return None
    digest = hashlib.sha256()
    for name in sorted(values):
        array = np.asarray(values[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def check_meta(path: str, stored: dict, expected: dict) -> None:
    """Refuse to resume a checkpoint written with other settings or other inputs."""
    if "inputs" in expected and stored.get("inputs") != expected["inputs"]:
        raise ValueError(
            f"checkpoint {path!r} was written for other inputs: the model's data, or a value "
            "it reads (a global, an attribute), changed since; remove the file to start afresh"
        )
    differ = {k: (stored.get(k), v) for k, v in expected.items() if stored.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: file {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"checkpoint {path!r} was written with other settings ({detail})")
