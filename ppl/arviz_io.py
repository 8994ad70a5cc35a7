"""ArviZ export: one ``xarray.DataTree`` code path for ArviZ 0.2x and 1.x.

The tree has the standard groups (``posterior``, ``sample_stats``, ``log_likelihood``,
``observed_data``, ``prior``, ``prior_predictive``, ``posterior_predictive``) with dims
``(chain, draw, ...)``, plus any rectangular extra group (SMC stages). ArviZ 1.x takes the
DataTree itself; ArviZ 0.2x gets ``az.from_datatree(tree)``. ``az.from_dict`` is not used: its
signature changed between the two generations.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

import arviz as az
import numpy as np
import xarray as xr

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1


def _dims_for(name: str, shape: tuple[int, ...], leading: tuple[str, ...], named: tuple = ()):
    """Dims for an array: the leading sample dims, then for each axis of one value its plate
    name (``named``, aligned to the right; ``None`` for an axis of no plate) or
    ``{name}_dim_{i}``."""
    event_ndim = len(shape) - len(leading)
    named = tuple(named)[-event_ndim:] if event_ndim > 0 else ()
    dims = list(leading)
    for i in range(event_ndim):
        offset = event_ndim - len(named)
        plate = named[i - offset] if i >= offset else None
        dims.append(plate if plate is not None and plate not in dims else f"{name}_dim_{i}")
    return dims


def dataset(
    arrays: dict,
    leading: tuple[str, ...] = ("chain", "draw"),
    site_dims: dict | None = None,
    attrs: dict | None = None,
) -> xr.Dataset:
    """An ``xr.Dataset`` of numpy arrays whose first axes are the ``leading`` dims."""
    site_dims = site_dims or {}
    data_vars = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        dims = _dims_for(name, value.shape, leading, site_dims.get(name, ()))
        data_vars[name] = (dims, value)
    all_dims = {d for dims, _ in data_vars.values() for d in dims}
    clash = sorted(set(data_vars) & all_dims)
    if clash:  # xarray makes such a variable a coordinate, and ArviZ drops the group
        raise ValueError(
            f"site(s) {clash} share their name with a dimension of the ArviZ export "
            f"({sorted(all_dims)}); rename the site (or the plate)"
        )
    ds = xr.Dataset(data_vars)
    for dim in ds.dims:
        if dim not in ds.coords:
            ds = ds.assign_coords({dim: np.arange(ds.sizes[dim])})
    ds.attrs.update(_default_attrs())
    ds.attrs.update(attrs or {})
    return ds


def with_user_dims(site_dims: dict, dims, value_shapes: dict) -> dict:
    """``site_dims`` with the user's ``dims`` in place: ``{site: [one name per axis of one
    value]}`` (as ``az.from_numpyro(dims=...)``), checked against the sites' ``value_shapes``."""
    if dims is None:
        return site_dims
    if not isinstance(dims, Mapping):
        raise TypeError(f"dims must be a dict {{site: [dim names]}}, got {type(dims).__name__}")
    merged = dict(site_dims)
    for name, names in dims.items():
        if name not in value_shapes:
            raise ValueError(
                f"dims names site {name!r}, which this export does not hold; "
                f"its sites are {sorted(value_shapes)}"
            )
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"dims[{name!r}] must be a list of dim names (strings), got {names!r}")
        shape = value_shapes[name]
        if len(names) != len(shape):
            raise ValueError(
                f"dims[{name!r}] names {len(names)} axes {list(names)}, but one value of "
                f"{name!r} has shape {shape} ({len(shape)} axes)"
            )
        reserved = sorted({"chain", "draw"} & set(names))
        if reserved:
            raise ValueError(
                f"dims[{name!r}] uses {reserved}, the sample dims every group already has; "
                f"name only the axes of one value"
            )
        merged[name] = tuple(names)
    return merged


def with_user_coords(groups: dict[str, xr.Dataset], coords) -> dict[str, xr.Dataset]:
    """The datasets with the user's ``coords`` (``{dim: labels}``) on every dim they have;
    a dim that no group has, or labels of the wrong length, is an error naming the dim."""
    if coords is None:
        return groups
    if not isinstance(coords, Mapping):
        raise TypeError(f"coords must be a dict {{dim: labels}}, got {type(coords).__name__}")
    sizes = {dim: size for ds in groups.values() for dim, size in ds.sizes.items()}
    for dim, labels in coords.items():
        if dim not in sizes:
            raise ValueError(
                f"coords names dim {dim!r}, which no group of this export has; its dims are "
                f"{sorted(sizes)} (name a site's axes with dims=)"
            )
        if np.ndim(labels) != 1 or len(labels) != sizes[dim]:
            raise ValueError(
                f"coords[{dim!r}] must hold {sizes[dim]} labels (one per position of that "
                f"dim), got shape {np.shape(labels)}"
            )
    return {
        name: ds.assign_coords({d: np.asarray(v) for d, v in coords.items() if d in ds.dims})
        for name, ds in groups.items()
    }


def _default_attrs() -> dict:
    from ppl import __version__

    return {
        "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
        "inference_library": "ppl",
        "inference_library_version": __version__,
        "arviz_version": az.__version__,
    }


def to_arviz(groups: dict[str, xr.Dataset]):
    """Wrap a dict of datasets as ArviZ data: a DataTree on ArviZ 1.x, InferenceData on 0.2x."""
    tree = xr.DataTree.from_dict({name: ds for name, ds in groups.items() if ds is not None})
    if ARVIZ_1:
        return tree
    return az.from_datatree(tree)


def group_names(data) -> set[str]:
    """The group names of ArviZ data from either generation (DataTree or InferenceData)."""
    if isinstance(data, xr.DataTree):
        return set(data.children)
    return set(data.groups())


def draws_to_arviz(draws, var_name: str, attrs: dict):
    """ArviZ data whose ``posterior`` group holds ``draws`` of shape ``(n, d)`` as one chain,
    dims ``(chain=1, draw, {var_name}_dim)``: the export of diffusion and composition samples."""
    check_var_name(var_name)
    draws = np.asarray(draws)[None]
    site_dims = {var_name: (f"{var_name}_dim",)}
    return to_arviz({"posterior": dataset({var_name: draws}, site_dims=site_dims, attrs=attrs)})


def check_var_name(var_name) -> str:
    """A variable name for an export: a non-empty string."""
    if not isinstance(var_name, str) or not var_name:
        raise TypeError(f"var_name must be a non-empty string, got {var_name!r}")
    return var_name


def draws_summary(data, **kwargs):
    """ArviZ's summary of draws that form no Markov chain (particles, independent SDE runs):
    mean, sd and credible interval (``kind="stats"``) unless ``kind=`` says otherwise."""
    kwargs.setdefault("kind", "stats")
    return az.summary(data, **kwargs)
