"""How `gfedge serve` listens and what it refuses: one frozen dataclass, checked when it is made.

Safe by default: it binds 127.0.0.1; any other address needs a token (clients send
`Authorization: Bearer <token>`), because a zoo on the network without one would run anyone's
requests and load and unload its models. Every limit is checked before the work it protects:
the body size before the body is read, the JSON nesting before it is parsed, a tensor's shape
against the manifest before it becomes an array.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from geofractal_edge.errors import GfedgeError

LOOPBACK_NAMES = ("localhost",)
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8470
    token: str | None = None  # required on a non-loopback address; checked on every request when set
    allowed_hosts: tuple[str, ...] = ()  # extra names clients may put in Host/Origin (e.g. a DNS name)
    key_roots: tuple[Path, ...] = ()  # hot-added key folders must lie in the zoo folder or under one of these
    max_body_bytes: int = 64 << 20
    max_json_depth: int = 32  # nesting of objects and arrays in a JSON body
    max_int_digits: int = 20  # digits of one JSON integer (int64 has 19)
    workers: int = 4  # threads that parse, check and run requests; more wait in the queue
    max_connections: int = 64  # open connections; the next one is answered 503
    backlog: int = 128
    request_timeout_s: float = 60.0  # reading the body, waiting for a worker, waiting for room in the budget
    drain_timeout_s: float = 30.0  # on SIGTERM/SIGINT: how long in-flight requests may take to finish
    rescan_s: float = 2.0

    def __post_init__(self) -> None:
        if not is_loopback(self.host) and not self.token:
            raise GfedgeError(f"refusing to serve on {self.host} without a token: anyone who can reach it could run and unload models",
                              "pass --token-file FILE (clients send Authorization: Bearer <token>), or serve on 127.0.0.1")
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise GfedgeError(f"the token has {len(self.token)} characters, fewer than {MIN_TOKEN_CHARS}",
                              "write a long random one: python -c 'import secrets; print(secrets.token_urlsafe(32))' > token")
        for name, value in (("workers", self.workers), ("max_connections", self.max_connections), ("max_body_bytes", self.max_body_bytes)):
            if value < 1:
                raise GfedgeError(f"{name} must be >= 1, got {value}", "pass a positive number")
        if self.request_timeout_s <= 0 or self.drain_timeout_s < 0:
            raise GfedgeError(f"timeouts must be positive, got request {self.request_timeout_s} s, drain {self.drain_timeout_s} s", "pass seconds > 0")

    def host_names(self, port: int) -> frozenset[str]:
        """What a client may put in Host (and Origin): the bind address or its loopback names, with or without the port.

        Empty when bound to every interface with no --allow-host: then any name goes and the token guards.
        """
        names = {name.lower() for name in self.allowed_hosts}
        if is_loopback(self.host):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        elif not _is_wildcard(self.host):
            names.add(f"[{self.host}]" if ":" in self.host else self.host)
        elif not names:
            return frozenset()
        return frozenset(names | {f"{n}:{port}" for n in names})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def read_token(path: Path) -> str:
    """The bearer token in `path` (surrounding whitespace dropped); refused if others may read the file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise GfedgeError(f"cannot read the token file {path} ({exc})", "write the token into a file only you can read (chmod 600)") from None
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        raise GfedgeError(f"the token file {path} can be read by other users", f"chmod 600 {path}")
    if not token or any(c.isspace() for c in token):
        raise GfedgeError(f"the token file {path} is empty or holds whitespace inside the token", "write one token on one line")
    return token
