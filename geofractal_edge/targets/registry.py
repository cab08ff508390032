"""The known target profiles: one TOML file each under profiles/, looked up by name or alias."""

from __future__ import annotations

import difflib
import functools
import tomllib
from importlib import resources
from pathlib import Path

from geofractal_edge.errors import GfedgeError, UnknownTargetError
from geofractal_edge.targets.profile import TargetProfile


@functools.cache
def all_targets() -> dict[str, TargetProfile]:
    """Every shipped profile by canonical name, in file-name order."""
    folder = resources.files("geofractal_edge.targets") / "profiles"
    profiles = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            profile = load_profile_text(entry.read_text(encoding="utf-8"), source=entry.name)
            profiles[profile.name] = profile
    return profiles


def load_profile_text(text: str, *, source: str) -> TargetProfile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GfedgeError(f"target profile {source} is not valid TOML ({exc})", "fix the file") from exc
    return TargetProfile.from_dict(data)


def get_target(name: str) -> TargetProfile:
    """A profile by name, alias, or path to a TOML file; an unknown name lists the known ones."""
    profiles = all_targets()
    wanted = name.strip().lower()
    for profile in profiles.values():
        if wanted == profile.name or wanted in profile.aliases:
            return profile
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        return load_profile_text(path.read_text(encoding="utf-8"), source=str(path))
    known = ", ".join(f"{p.name}" + (f" ({', '.join(p.aliases)})" if p.aliases else "") for p in profiles.values())
    close = difflib.get_close_matches(wanted, [n for p in profiles.values() for n in (p.name, *p.aliases)], n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise UnknownTargetError(f"unknown target '{name}'", f"{hint}known targets: {known}")
