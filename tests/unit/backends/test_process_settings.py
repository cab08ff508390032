"""Process-wide settings carried per bundle: glibc's mmap threshold holds the first value applied, a later
session asking for another is warned about (never applied), `configure_process` sets it once; the shared
arena is registered once and each session only opts in or not.

glibc's mallopt is replaced by a recorder: the real threshold is process-wide and would change how
every later test in this process measures memory.
"""

from __future__ import annotations

import logging

import pytest

from geofractal_edge.backends import process
from geofractal_edge.backends.onnxruntime import loader, load
from geofractal_edge.errors import GfedgeError
from geofractal_edge.targets.profile import RuntimeSettings


@pytest.fixture()
def mallopt(monkeypatch):
    """A fresh process state and the thresholds (bytes) set through glibc, recorded instead of applied."""
    applied: list[int] = []

    def record(nbytes: int) -> bool:
        applied.append(nbytes)
        return nbytes > 0

    monkeypatch.setattr(process, "_mmap", process._Held())
    monkeypatch.setattr(process, "set_mmap_threshold", record)
    return applied


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "geofractal_edge.backends.process" and r.levelno == logging.WARNING]


def test_two_bundles_asking_different_thresholds_keep_the_first_and_warn_once(bundle_factory, mallopt, caplog):
    caplog.set_level(logging.WARNING, logger="geofractal_edge.backends.process")
    path = bundle_factory("fp32")
    with load(path, mmap_threshold_kib=256), load(path, mmap_threshold_kib=1024), load(path, mmap_threshold_kib=1024):
        pass
    assert mallopt == [256 << 10]  # the later session never changed it
    (line,) = _warnings(caplog)  # once for that bundle and value, not once per session
    assert "\n" not in line and "asks for 1024 KiB" in line and "holds 256 KiB" in line
    assert f"bundle '{path.name}'" in line and "configure_process(mmap_threshold_kib=N)" in line


def test_one_bundle_sets_its_threshold_as_before_and_zero_asks_for_nothing(bundle_factory, mallopt, caplog):
    caplog.set_level(logging.WARNING, logger="geofractal_edge.backends.process")
    path = bundle_factory("fp32")
    with load(path, mmap_threshold_kib=0):
        assert mallopt == []
    with load(path, mmap_threshold_kib=256), load(path, mmap_threshold_kib=256), load(path, mmap_threshold_kib=0):
        pass
    assert set(mallopt) == {256 << 10} and _warnings(caplog) == []


def test_configure_process_holds_for_every_later_session_quietly(bundle_factory, mallopt, caplog):
    caplog.set_level(logging.WARNING, logger="geofractal_edge.backends.process")
    assert process.configure_process(mmap_threshold_kib=4096) is True
    with load(bundle_factory("fp32"), mmap_threshold_kib=256):
        pass
    assert mallopt == [4096 << 10] and _warnings(caplog) == []
    assert process.session_mmap_threshold(256, asked_by="x") == 4096


def test_configure_process_zero_keeps_glibcs_own_threshold(mallopt):
    assert process.configure_process(mmap_threshold_kib=0) is False
    assert process.session_mmap_threshold(256, asked_by="x") == 0 and mallopt == []


def test_configure_process_refuses_to_change_what_the_process_holds(mallopt):
    process.session_mmap_threshold(256, asked_by="bundle 'a'")
    with pytest.raises(GfedgeError, match=r"holds an mmap threshold of 256 KiB already, set by bundle 'a' \(call configure_process before"):
        process.configure_process(mmap_threshold_kib=1024)
    assert process.configure_process(mmap_threshold_kib=256) is True  # the value it holds: accepted, now the process's


@pytest.mark.parametrize("bad", [-1, 1 << 20, True, 1.5, "256"])
def test_configure_process_refuses_a_bad_value_with_the_fix(mallopt, bad):
    with pytest.raises(GfedgeError, match=r"^mmap_threshold_kib is .* \(use a whole number of KiB from 0"):
        process.configure_process(mmap_threshold_kib=bad)
    assert mallopt == []


def test_the_shared_arena_is_registered_once_and_each_session_opts_in_or_not(monkeypatch):
    """No value of one bundle overrides another's: the arena is the process's, the opt-in is the session's."""
    registered = []
    monkeypatch.setattr(loader, "_registered", [])
    monkeypatch.setattr(loader.require("onnxruntime"), "create_and_register_allocator", lambda info, cfg: registered.append(info))
    on = loader.session_options(RuntimeSettings(shared_arena=True))
    off = loader.session_options(RuntimeSettings(shared_arena=False))
    again = loader.session_options(RuntimeSettings(shared_arena=True))
    assert len(registered) == 1
    assert on.get_session_config_entry("session.use_env_allocators") == "1" == again.get_session_config_entry("session.use_env_allocators")
    with pytest.raises(Exception):  # never set on a session that did not ask
        off.get_session_config_entry("session.use_env_allocators")


def test_after_configure_process_where_glibc_refused_sessions_still_ask_for_nothing(monkeypatch):
    """configure_process decides for the process even when mallopt refused its value (no glibc): a later session's
    own value is not applied behind the caller's back."""
    applied: list[int] = []

    def refuse(nbytes: int) -> bool:
        applied.append(nbytes)
        return False

    monkeypatch.setattr(process, "_mmap", process._Held())
    monkeypatch.setattr(process, "set_mmap_threshold", refuse)
    assert process.configure_process(mmap_threshold_kib=256) is False
    assert process.session_mmap_threshold(512, asked_by="bundle b") == 0
    assert applied == [256 << 10]  # only configure_process's own attempt


def test_prepared_options_are_the_settings_session_options_with_their_threshold_applied_to_the_process(mallopt, caplog):
    """What a benchmark opening a plain graph gets is what the runtime's sessions get: options and threshold alike."""
    caplog.set_level(logging.WARNING, logger="geofractal_edge.backends.process")
    settings = RuntimeSettings(intra_op_threads=3, allow_spinning=False, mmap_threshold_kib=512)
    options = loader.prepared_options(settings, asked_by="target t")
    made = loader.session_options(settings)
    assert options.intra_op_num_threads == 3 == made.intra_op_num_threads
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0" == made.get_session_config_entry("session.intra_op.allow_spinning")
    assert mallopt == [512 << 10]
    loader.prepared_options(settings.but(mmap_threshold_kib=1024), asked_by="bundle 'later'")
    assert mallopt == [512 << 10]  # the first value holds for the process
    (line,) = _warnings(caplog)
    assert "bundle 'later'" in line and "set first by target t" in line
