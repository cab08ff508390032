"""The two error families.

`GfedgeError` is a user error: bad input, a missing file, a bundle that does not match this host.
It names the problem and the fix, and the CLI prints it as one line without a traceback.
Anything else that escapes is a bug in geofractal_edge and is reported as such.
"""

from __future__ import annotations


class GfedgeError(Exception):
    """A problem the user can fix. `fix` says how."""

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.problem} ({self.fix})" if self.fix else self.problem


class UnknownTargetError(GfedgeError):
    """A target profile name that is not registered."""


class BundleError(GfedgeError):
    """A bundle that is corrupt, incomplete, or incompatible with this host."""


class InputError(GfedgeError):
    """Inputs that do not match what the model declares."""


class KeyFileError(GfedgeError):
    """A latent key that is missing, malformed, or made for another core."""


class MissingDependencyError(GfedgeError):
    """An optional dependency that this command needs is not installed."""


class OutputLockedError(GfedgeError):
    """Another writer holds the lock on this output path right now."""

    def __init__(self, out, lock, pid: str) -> None:
        self.out, self.lock, self.pid = out, lock, pid
        super().__init__(f"another export is writing {out}: lock {lock} is held by pid {pid}", "wait for it to finish, or choose another --out")

    def __reduce__(self):  # rebuilt from its fields when it crosses a process boundary
        return type(self), (self.out, self.lock, self.pid)


class Bug(RuntimeError):
    """Something geofractal_edge got wrong, not the user: reported with a traceback."""
