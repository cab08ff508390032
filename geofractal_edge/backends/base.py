"""The runner contract every backend keeps, and what they share: inputs checked, the key bound from a cache.

A runner is one bundle loaded and ready to run (Polygraphy's BaseRunner, with loading done at
construction). `run(inputs, *, key=None)` checks the inputs against the manifest, binds the active
key and calls the backend's `_execute(feeds) -> outputs`; switching keys only changes which vector
is bound, nothing is rebuilt or reloaded, and binding the key bound already (a server names one with
every request) looks nothing up: the bound vector stays, whatever the cache has done since. Inputs
already `Checked` by a checker of the same declarations (`InputChecker.checked`: the zoo checks a
request before it loads the model) are not checked again, so every call is checked exactly once, by
whoever checks first. `placement` says
where the graph runs, `cache_key` names the compiled artifact the backend reuses (None where there
is none), and `close()` frees what the backend holds, also on leaving a `with` block.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

import numpy as np

from geofractal_edge.artifacts import Bundle, Key
from geofractal_edge.backends.inputs import Checked, InputChecker
from geofractal_edge.backends.keys import KeyCache
from geofractal_edge.backends.placement import PlacementReport
from geofractal_edge.errors import GfedgeError, InputError


class Runner(abc.ABC):
    providers_used: tuple[str, ...] = ()  # what actually runs the graph, in order
    fallbacks: tuple[str, ...] = ()  # what the target asked for and this host could not give
    cache_key: str | None = None  # the id of the engine / engine cache this runner reuses
    load_seconds: float = 0.0

    def __init__(self, bundle: Bundle, *, key_capacity: int = 64, checker: InputChecker | None = None) -> None:
        """Set up the key cache and bind the bundle's default key, if it names one.

        `checker`: the bundle's input checker when the caller has one already (the zoo's, which checks
        requests before loading); it must hold this graph's declarations. Default: one made here.
        """
        graph = bundle.manifest.graph
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.keys = KeyCache(bundle, capacity=key_capacity)
        self._key_input = graph.key_input.name if graph.key_input else None
        self._check_inputs = _checker_of(graph, checker)  # prepared once: every run not `Checked` already checks
        self._active: Key | None = None
        self._closed = False
        default = bundle.manifest.keys.default if bundle.manifest.keys else None
        if self._key_input and default:
            self.use_key(default)

    @property
    @abc.abstractmethod
    def placement(self) -> PlacementReport:
        """Where the graph runs on this host, against where the target meant it to."""

    @abc.abstractmethod
    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run checked feeds (the key bound) through the backend; outputs by name."""

    @property
    def active_key(self) -> str | None:
        return None if self._active is None else self._active.name

    @property
    def bound_key(self) -> Key | None:
        """The key bound now (with its metadata: core hash, text length), or None."""
        return self._active

    def use_key(self, key: str | Key) -> None:
        """Bind a key by name (bundle or key folders) or a Key already read and checked."""
        if self._key_input is None:
            raise InputError("this model takes no key", "drop --key")
        active = self._active
        if active is not None and (key is active or key == active.name):  # bound already (a server's every request): no lookup
            return
        self._active = key if isinstance(key, Key) else self.keys.get(key)

    def run(self, inputs: Mapping[str, np.ndarray], *, key: str | Key | None = None) -> dict[str, np.ndarray]:
        """Validate `inputs` against the manifest (unless `Checked` by the same declarations), bind the key and run; outputs by name."""
        if self._closed:
            raise GfedgeError(f"this runner of {self.bundle.path.name} is closed", "load the bundle again")
        if key is not None:
            self.use_key(key)
        feeds = dict(inputs)  # ours: the key is added to it, the caller's mapping is left alone
        key_input = self._key_input
        if key_input is not None and key_input in feeds:
            raise InputError(f"'{key_input}' is bound from the key cache", "pass --key NAME instead of the raw vector")
        checker = self._check_inputs
        if type(inputs) is not Checked or not checker.proved(inputs):  # the type test inline: most calls bring a plain dict
            checker(feeds)
        if key_input is not None:
            if self._active is None:
                raise InputError("no key is bound", f"pass a key: {', '.join(self.keys.names())}")
            feeds[key_input] = self._active.vector
        return self._execute(feeds)

    def close(self) -> None:
        """Free what the backend holds; later runs are refused. Backends extend this."""
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _checker_of(graph, checker: InputChecker | None) -> InputChecker:
    """`checker` if it holds `graph`'s declarations (one checker per bundle, shared), else a new one; refused if it holds others."""
    if checker is None:
        return InputChecker(graph.data_inputs, graph.dim_ranges)
    if not checker.holds(graph.data_inputs, graph.dim_ranges):
        raise GfedgeError("the input checker passed to this runner checks another graph's inputs",
                          "pass the checker made for this bundle (InputChecker(graph.data_inputs, graph.dim_ranges)), or none")
    return checker
