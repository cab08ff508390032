"""Helpers for the `gfedge serve` tests: a server process with torch blocked, a keep-alive JSON client, OIP bodies."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import numpy as np

from tests.conftest import ROOT
from tests.integration.test_device_side_without_torch import BLOCK_TORCH


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    ready: dict

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        """SIGTERM, wait; (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, self.proc.stderr.read()

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def start(zoo_dir, *args: str) -> Served:
    """`gfedge serve ZOO --port 0 --json ARGS` in a process where importing torch fails; returns once it answers."""
    argv = ["gfedge", "serve", str(zoo_dir), "--port", "0", "--json", *map(str, args)]
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        sys.argv = {argv!r}
        from geofractal_edge.cli.main import main
        main()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"gfedge serve did not start: {proc.stderr.read()}")
    ready = json.loads(line)
    return Served(proc=proc, port=ready["port"], ready=ready)


class Client:
    """One keep-alive connection, as a real client would hold."""

    def __init__(self, port: int, *, token: str | None = None, timeout: float = 60) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, path: str, body=None, *, headers: dict | None = None) -> tuple[int, object]:
        if body is None:
            self.connection.request("GET", path, headers={**self.headers, **(headers or {})})
        else:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.connection.request("POST", path, body=data, headers={"Content-Type": "application/json", **self.headers, **(headers or {})})
        response = self.connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def infer(self, x, *, model: str = "_zoo", **parameters) -> tuple[int, dict]:
        return self.call(f"/v2/models/{model}/infer", oip(x, **parameters))

    def close(self) -> None:
        self.connection.close()


def oip(x, *, name: str = "x", request_id: str | None = None, **parameters) -> dict:
    """An OIP inference request with one FP32 input as flat JSON data."""
    x = np.asarray(x, dtype=np.float32)
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    if parameters:
        body["parameters"] = parameters
    if request_id is not None:
        body["id"] = request_id
    return body


def params(answer: dict) -> dict:
    return answer.get("parameters", {})
