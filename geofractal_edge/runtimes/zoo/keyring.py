"""Keys the zoo can offer beyond its bundles: key folders watched while serving.

The second tier of the key cache. Each resident session keeps its own host LRU of keys
(`backends.keys.KeyCache`) and binds the active one as a graph input; this index knows, without
loading any model, which folder keys exist and which cores they were made for, so a request naming
a hot-added key finds its candidates. A folder is rescanned when a lookup misses or on request; a
file is read again only when its size or mtime changed. A file that is not a usable key (NaN
values, no metadata, a dimension that does not match its data, not a key at all) is listed in
`unreadable` with the reason and never offered; keys made for no core in the zoo are listed with
the reason by the zoo. A bad file never stops the zoo from starting or serving.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from geofractal_edge.artifacts import read_key
from geofractal_edge.errors import GfedgeError


@dataclass(frozen=True)
class FolderKey:
    name: str
    path: Path
    core_sha256: str
    dim: int


class KeyRing:
    def __init__(self, folders: list[Path] | None = None) -> None:
        self.folders: list[Path] = []
        self._seen: dict[Path, tuple[int, int]] = {}
        self._keys: dict[Path, FolderKey] = {}
        self.unreadable: dict[str, str] = {}  # path -> reason
        self._lock = threading.Lock()
        for folder in folders or []:
            self.add_folder(folder)

    def add_folder(self, folder: Path) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise GfedgeError(f"key folder {folder} does not exist", "create it, or pass an existing folder")
        with self._lock:
            if folder not in self.folders:
                self.folders.append(folder)
        self.rescan()

    def rescan(self) -> None:
        present: set[Path] = set()
        for folder in list(self.folders):
            for path in sorted(folder.glob("*.safetensors")):
                present.add(path)
                try:
                    stat = path.stat()
                except OSError:
                    continue
                stamp = (stat.st_size, stat.st_mtime_ns)
                if self._seen.get(path) == stamp:
                    continue
                self._read(path, stamp)
        with self._lock:
            for gone in [p for p in self._seen if p not in present]:
                self._seen.pop(gone, None)
                self._keys.pop(gone, None)
                self.unreadable.pop(str(gone), None)

    def _read(self, path: Path, stamp: tuple[int, int]) -> None:
        try:
            key = read_key(path)
        except Exception as exc:  # GfedgeError names the problem; anything else is a file the reader did not foresee
            reason = exc.one_line() if isinstance(exc, GfedgeError) else f"unreadable key file ({type(exc).__name__}: {exc})"
            with self._lock:
                self._seen[path] = stamp
                self._keys.pop(path, None)
                self.unreadable[str(path)] = reason[:300]
            return
        with self._lock:
            self._seen[path] = stamp
            self._keys[path] = FolderKey(name=path.stem, path=path, core_sha256=key.core_sha256, dim=key.dim)
            self.unreadable.pop(str(path), None)

    def find(self, name: str, *, core_sha256: str, dim: int) -> FolderKey | None:
        """The first folder key `name` made for this core and dimension."""
        for key in self.keys():
            if key.name == name and key.core_sha256 == core_sha256 and key.dim == dim:
                return key
        return None

    def names(self) -> set[str]:
        return {k.name for k in self.keys()}

    def unreadable_items(self) -> list[tuple[str, str]]:
        """(path, reason) of each file in the key folders that is not a usable key."""
        with self._lock:
            return list(self.unreadable.items())

    def keys(self) -> list[FolderKey]:
        with self._lock:
            return list(self._keys.values())
