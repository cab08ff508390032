"""glibc's huge-page malloc, asked for by the `gfedge` command through GLIBC_TUNABLES (targets/hugepages.py, cli/launch.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from geofractal_edge.targets import hugepages
from geofractal_edge.targets.hugepages import REEXECUTED, TUNABLE, hugepage_environ, hugepages_asked
from tests.conftest import ROOT


@pytest.fixture
def host_gives_them(monkeypatch):
    monkeypatch.setattr(hugepages, "_glibc_has_it", lambda: True)
    monkeypatch.setattr(hugepages, "_kernel_gives_them", lambda: True)


def test_the_tunable_is_added_once_beside_the_callers_own(host_gives_them):
    assert hugepage_environ({"PATH": "/bin"}) == {"PATH": "/bin", "GLIBC_TUNABLES": f"{TUNABLE}=1", REEXECUTED: "1"}
    added = hugepage_environ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert added["GLIBC_TUNABLES"] == f"glibc.malloc.trim_threshold=0:{TUNABLE}=1" and hugepages_asked(added)
    assert hugepage_environ(added) is None  # already asked: nothing changes, so the command re-executes at most once
    assert hugepage_environ({"GLIBC_TUNABLES": f"{TUNABLE}=0"}) is None  # the caller's own choice stands
    assert hugepage_environ({"GFEDGE_HUGEPAGES": "0"}) is None
    assert hugepage_environ({REEXECUTED: "1"}) is None  # re-executed once already, even where glibc dropped the tunable (AT_SECURE)


def test_nothing_changes_where_the_host_gives_no_huge_pages(monkeypatch):
    monkeypatch.setattr(hugepages, "_glibc_has_it", lambda: True)
    monkeypatch.setattr(hugepages, "_kernel_gives_them", lambda: False)
    assert hugepage_environ({}) is None
    monkeypatch.setattr(hugepages, "_kernel_gives_them", lambda: True)
    monkeypatch.setattr(hugepages, "_glibc_has_it", lambda: False)
    assert hugepage_environ({}) is None


def test_asked_reads_only_the_tunable_set_on():
    assert not hugepages_asked({}) and not hugepages_asked({"GLIBC_TUNABLES": f"{TUNABLE}=0"})
    assert hugepages_asked({"GLIBC_TUNABLES": f"a=1:{TUNABLE}=2"})


def test_the_gfedge_command_runs_under_it_where_the_host_has_it():
    """The console script's module re-executes once with the tunable; `gfedge env` reports it, and GFEDGE_HUGEPAGES=0 keeps it off."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "GFEDGE_HUGEPAGES", REEXECUTED)}
    if hugepage_environ(clean) is None:
        pytest.skip("this host has no glibc >= 2.35 or no transparent huge pages: the command runs as started")

    def env_says(environ):
        out = subprocess.run([sys.executable, "-m", "geofractal_edge.cli.launch", "env", "--json"], capture_output=True, text=True, env=environ,
                             cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)["malloc_hugepages"]

    assert env_says(clean) is True
    assert env_says({**clean, "GFEDGE_HUGEPAGES": "0"}) is False


def test_main_does_not_re_execute_a_program_that_calls_it(monkeypatch):
    """Only the command itself re-executes: a REPL, `python -c` or a program calling main() is never run a second time."""
    from geofractal_edge.cli import launch

    monkeypatch.setattr(launch.sys, "argv", ["-c"])
    assert launch._started_as_the_command() is False
    monkeypatch.setattr(launch.sys, "argv", ["/venv/bin/gfedge", "env"])
    assert launch._started_as_the_command() is True
