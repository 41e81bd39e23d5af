"""Cache entries bound to the run (and request) they were computed for.

The retrain cache (``training/retrain.py``) binds each entry to its run and forget set;
this module applies the same pattern to the other tensors a run caches (Mini-Unlearning's
trajectory correction, the float64 retain optimum). An entry is one safetensors file whose
metadata holds :func:`cache_binding`: the run binding of
:func:`~miniunlearn.training.retrain.retrain_binding` (sha256 of the run's config, original
model and user data files as its manifest records them, ``n_train``; with the forget set's
sha256 and count when the entry depends on one), the entry's kind and format, and every
setting the value depends on. :func:`cached_bound_tensor` uses an entry only when its
sidecar hash matches (see :func:`miniunlearn.fileio.cached`) and its recorded binding equals
the expected one; an entry copied from another run, renamed from another request, written
with other settings or by a version without bindings is recomputed and replaced atomically,
with a warning naming it. Like the retrain binding, it is a public record, not a secret: it
guards against foreign and misplaced entries, not against whoever can write the run folder.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .fileio import cached, save_tensors
from .training.history import stable_metadata
from .training.retrain import ForeignCacheEntry, recorded_binding, retrain_binding
from .training.rundir import Run

_IDS_FIELDS = ("ids_sha256", "n_ids")


def cache_binding(
    run: Run, kind: str, depends: Mapping[str, object], ids: np.ndarray | None = None
) -> dict[str, str]:
    """Return the record that binds a cache entry of ``kind`` to ``run``.

    Takes the opened run, the entry's kind (e.g. ``"optimum"``), the settings its value
    depends on (written as ``depends.<name>`` = ``str(value)``) and, when the value depends
    on a forget set, its ids (any order). Returns string fields: ``binding`` =
    ``miniunlearn-<kind>/1``, the run fields of :func:`retrain_binding` and, with ``ids``,
    their sha256 and count. Raises RunDirError when the run's manifest lacks its config or
    model record.
    """
    ids_given = ids is not None
    binding = retrain_binding(run, ids if ids_given else np.zeros(0, np.int64))
    if not ids_given:
        for name in _IDS_FIELDS:
            binding.pop(name)
    binding["binding"] = f"miniunlearn-{kind}/1"
    binding.update({f"depends.{name}": str(value) for name, value in sorted(depends.items())})
    return binding


def check_bound_entry(path: Path, expected: Mapping[str, str]) -> None:
    """Raise ForeignCacheEntry saying why the entry at ``path`` does not carry the binding
    ``expected`` (none recorded, another format, or the fields that differ); return None
    when it does."""
    found = recorded_binding(path)
    if "binding" not in found:
        raise ForeignCacheEntry(
            "it records no binding (written by hand, by another program or by a version before "
            "entries were bound)"
        )
    wrong = sorted(k for k, v in expected.items() if found.get(k) != v)
    if "binding" in wrong:
        raise ForeignCacheEntry(f"it records binding {found['binding']!r}, not {expected['binding']!r}")
    if wrong:
        raise ForeignCacheEntry(
            f"it was written for another run, request or settings ({', '.join(wrong)} differ)"
        )


def cached_bound_tensor(
    path: Path,
    binding: Mapping[str, str],
    compute: Callable[[], torch.Tensor],
    *,
    name: str,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, bool]:
    """Return (tensor, whether it came from the cache) for the bound cache entry ``path``.

    ``binding``: the record the entry must carry (from :func:`cache_binding`); ``compute``:
    makes the value when the entry is missing, damaged or not bound to ``binding``;
    ``name``: the tensor's name in the file; ``device``/``dtype``: where (and, when given,
    as what) a cached value is loaded. The computed value is saved atomically with the
    binding in the file's metadata.
    """
    expected = dict(binding)

    def load(entry: Path) -> torch.Tensor:
        try:
            check_bound_entry(entry, expected)
        except ForeignCacheEntry as why:
            warnings.warn(
                f"cache entry {entry} is not used: {why}; recomputing and replacing it", stacklevel=3
            )
            raise
        value = load_file(str(entry))[name].to(device)
        return value if dtype is None else value.to(dtype)

    return cached(
        path,
        load=load,
        compute=compute,
        save=lambda value, tmp: save_tensors({name: value.contiguous()}, tmp, stable_metadata(expected)),
        damaged=(SafetensorError, OSError, KeyError),
        foreign=(ForeignCacheEntry,),
    )
