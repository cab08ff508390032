"""A host-side cache of latent keys: bundle keys and key folders, least recently used evicted.

Keys are read from the bundle's keys/ or from extra folders added while serving (a key file dropped
into a watched folder is found at the next lookup). Every key is checked against the core it was
made for before it is used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from geofractal_edge.artifacts import Bundle, Key, check_key, read_key
from geofractal_edge.errors import KeyFileError


class KeyCache:
    def __init__(self, bundle: Bundle, *, capacity: int = 64) -> None:
        keys = bundle.manifest.keys
        self._bundle = bundle
        self._dim = keys.dim if keys else 0
        self._core = bundle.manifest.model.core_sha256
        self._capacity = capacity
        self._cache: OrderedDict[str, Key] = OrderedDict()
        self._folders: list[Path] = []
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def add_folder(self, folder: Path) -> None:
        self._folders.append(Path(folder))

    def names(self) -> list[str]:
        found = list(self._bundle.key_names())
        for folder in self._folders:
            found += [p.stem for p in sorted(folder.glob("*.safetensors")) if p.stem not in found]
        return found

    def get(self, name: str) -> Key:
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                self.hits += 1
                return self._cache[name]
        key = self._load(name)
        with self._lock:
            self.misses += 1
            self._cache[name] = key
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return key

    def from_file(self, path: Path) -> Key:
        key = read_key(path)
        check_key(key, dim=self._dim, core_sha256=self._core, source=str(path))
        return key

    def _load(self, name: str) -> Key:
        if name in self._bundle.key_names():
            key = self._bundle.key(name)
            check_key(key, dim=self._dim, core_sha256=self._core, source="bundle")
            return key
        for folder in self._folders:
            path = folder / f"{name}.safetensors"
            if path.is_file():
                return self.from_file(path)
        known = ", ".join(self.names()) or "none"
        raise KeyFileError(f"unknown key '{name}'", f"known keys: {known}")
