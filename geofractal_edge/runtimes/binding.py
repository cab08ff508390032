"""What every runtime session shares: inputs checked against the manifest, the key bound from a cache.

A session class mixes `KeyedRunner` in, calls `_bind_keys` once it is loaded, and implements
`_execute(feeds) -> outputs`; `run` validates, binds the active key and calls it. Switching keys
only changes which vector is bound: nothing is rebuilt or reloaded.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geofractal_edge.artifacts import Bundle, Key
from geofractal_edge.errors import InputError
from geofractal_edge.runtimes.inputs import check_inputs
from geofractal_edge.runtimes.keys import KeyCache


class KeyedRunner:
    def _bind_keys(self, bundle: Bundle, *, key_capacity: int) -> None:
        """Set up the key cache and bind the bundle's default key, if it names one."""
        inputs = bundle.manifest.inputs
        self.keys = KeyCache(bundle, capacity=key_capacity)
        self._key_input = next((i["name"] for i in inputs if i.get("role") == "key"), None)
        self._data_specs = [i for i in inputs if i.get("role") != "key"]
        self._active: Key | None = None
        default = (bundle.manifest.keys or {}).get("default")
        if self._key_input and default:
            self.use_key(default)

    @property
    def active_key(self) -> str | None:
        return None if self._active is None else self._active.name

    def use_key(self, key: str | Key) -> None:
        """Bind a key by name (bundle or key folders) or a Key already read and checked."""
        if self._key_input is None:
            raise InputError("this model takes no key", "drop --key")
        self._active = key if isinstance(key, Key) else self.keys.get(key)

    def run(self, inputs: Mapping[str, np.ndarray], *, key: str | Key | None = None) -> dict[str, np.ndarray]:
        """Validate `inputs` against the manifest, bind the key and run; outputs by name."""
        if key is not None:
            self.use_key(key)
        feeds = dict(inputs)
        if self._key_input is not None and self._key_input in feeds:
            raise InputError(f"'{self._key_input}' is bound from the key cache", "pass --key NAME instead of the raw vector")
        check_inputs(feeds, self._data_specs)
        if self._key_input is not None:
            if self._active is None:
                raise InputError("no key is bound", f"pass a key: {', '.join(self.keys.names())}")
            feeds[self._key_input] = self._active.vector
        return self._execute(feeds)

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError
