"""Exports that cannot collide: one writer per output path, no leftovers, ordinary permissions."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from geofractal_edge.artifacts import atomic
from geofractal_edge.errors import OutputLockedError
from tests.conftest import gfedge


def _hold(final: str, entered, release) -> None:
    """Child: write `final` while the parent tries to write it too; finish only when told."""
    with atomic.directory(Path(final)) as staging:
        (staging / "who").write_text("first")
        entered.set()
        assert release.wait(30), "parent never released the writer"


def _siblings(final: Path) -> list[str]:
    return sorted(p.name for p in final.parent.iterdir() if p.name != final.name)


def test_second_writer_fails_at_once_naming_the_lock(tmp_path):
    final = tmp_path / "bundle"
    ctx = multiprocessing.get_context("fork")  # no re-import of this module: fast and deterministic
    entered, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold, args=(str(final), entered, release))
    child.start()
    try:
        assert entered.wait(30), "the first writer never took the lock"
        with pytest.raises(OutputLockedError) as caught:
            with atomic.directory(final, overwrite=True):
                pytest.fail("a second writer entered while the first held the lock")
        message = caught.value.one_line()
        assert str(atomic.lock_path(final)) in message and f"pid {child.pid}" in message
        assert "choose another --out" in message and "\n" not in message
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    assert (final / "who").read_text() == "first"
    assert _siblings(final) == []  # the lock file goes with its holder


def test_lock_is_free_again_after_the_writer_leaves(tmp_path):
    final = tmp_path / "bundle"
    with atomic.locked(final) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    for content in ("one", "two"):
        with atomic.directory(final, overwrite=True) as staging:
            (staging / "x").write_text(content)
    assert (final / "x").read_text() == "two"


def test_leftovers_of_killed_writers_are_removed_and_only_those(tmp_path):
    final = tmp_path / "bundle"
    stale = [".bundle.x.partial", ".bundle.abc_1234.partial", ".bundle.old-123"]
    others = [".bundle.v2.x.partial", ".bundle.v2.old-5", ".other.x.partial", "bundle.old-7"]
    for name in stale + others:
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("left")
    with atomic.directory(final) as staging:
        (staging / "f").write_text("new")
    assert _siblings(final) == sorted(others)


@pytest.mark.parametrize("swap", ["exchange", "rename"])
def test_overwrite_replaces_and_leaves_no_siblings(tmp_path, monkeypatch, swap):
    if swap == "rename":
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "old").write_text("old")
    with atomic.directory(final, overwrite=True) as staging:
        (staging / "new").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new"]
    assert _siblings(final) == []


def test_overwrite_that_fails_keeps_the_old_content(tmp_path, monkeypatch):
    final = tmp_path / "bundle"
    final.mkdir()
    (final / "old").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.directory(final, overwrite=True) as staging:
            (staging / "new").write_text("new")
            raise RuntimeError("export died")
    assert (final / "old").read_text() == "old" and _siblings(final) == []

    # A failure between the two renames of the fallback swap puts the old content back.
    real_rename = os.rename
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)

    def rename(src, dst):
        if str(src).endswith(".partial"):
            raise OSError("disk gone")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="disk gone"):
        with atomic.directory(final, overwrite=True) as staging:
            (staging / "new").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["old"] and _siblings(final) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_everything_in_the_bundle_gets_ordinary_permissions(tmp_path, umask):
    final = tmp_path / "bundle"
    previous = os.umask(umask)
    try:
        with atomic.directory(final) as staging:
            atomic.write_text(staging / "manifest.json", "{}")  # mkstemp: 0600 before the fix
            (staging / "sub").mkdir(mode=0o700)
            (staging / "sub" / "model.onnx").write_bytes(b"x")
            os.chmod(staging / "sub" / "model.onnx", 0o600)
    finally:
        os.umask(previous)
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [final, *final.rglob("*")]}
    dirs, files = 0o777 & ~umask, 0o666 & ~umask
    assert modes == {"bundle": dirs, "bundle/sub": dirs, "bundle/manifest.json": files, "bundle/sub/model.onnx": files}


def test_cli_export_to_a_locked_path_exits_2_naming_the_lock(tiny_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    with atomic.locked(out) as lock:
        done = gfedge("export", "--target", "host-cpu", "--family", "atlas", "--model", tiny_checkpoint, "--out", out, "--json")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: another export is writing") and str(lock) in lines[0] and f"pid {os.getpid()}" in lines[0], lines[0]
    assert not out.exists() and _siblings(out) == []


def test_two_concurrent_cli_exports_to_one_out_exactly_one_succeeds(tiny_checkpoint, tmp_path):
    """Both started at once: the lock is taken before any work, so the loser exits 2 naming it."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "bundle"
    args = [sys.executable, "-m", "geofractal_edge.cli.main", "export", "--target", "host-cpu", "--family", "atlas",
            "--model", str(tiny_checkpoint), "--out", str(out), "--json"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "lock" in loser and len(loser.strip().splitlines()) == 1, loser
    assert (out / "manifest.json").is_file() and not list(tmp_path.glob(".bundle.*"))
