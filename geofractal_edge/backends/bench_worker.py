"""The bench worker: one fresh interpreter per measured subject (`python -m geofractal_edge.backends.bench_worker`).

It reads one JSON request per line on stdin and answers one line on stdout, tagged so that
anything else printed is ignored: `load` opens the bundle, makes the batch inputs, reads VmRSS,
its private part (RssAnon) and glibc's heap in use, loads the Session, reads them again, warms up
every batch and reads them a third time, with the resident high-water mark of the warm-up calls
(VmHWM, reset after the load); then it releases that session, loads the bundle again and reads
VmRSS the same way (`again`): the model's own cost, without what only a process's first session pays. `time` runs a chunk of
timed Runner.run calls, each beside a bare InferenceSession.run of the same session; `quit` ends
it. No torch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.backends.lazy import require
from geofractal_edge.backends.onnxruntime import Session
from geofractal_edge.backends.onnxruntime.placement import batch_feeds
from geofractal_edge.backends.process import heap_bytes, peak_rss_bytes, reset_peak_rss, status_bytes, trim
from geofractal_edge.errors import GfedgeError

TAG = "GFEDGE-BENCH "  # protocol lines start with this; anything else the worker prints is ignored


def serve() -> None:
    """The worker: load on request, then time chunks of runs; one tagged JSON line per answer."""
    require("onnxruntime")  # imported before the first reading, so its own size is not the bundle's
    state: dict = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            return
        try:
            answer = _load(request, state) if request["op"] == "load" else _time(request, state)
        except GfedgeError as exc:
            answer = {"error": exc.problem, "fix": exc.fix}
        sys.stdout.write(TAG + json.dumps(answer) + "\n")
        sys.stdout.flush()


def _load(request: dict, state: dict) -> dict:
    """Load the bundle twice in this process: the first session's readings, then the same after it is released.

    The first load pays for what a process pays once (onnxruntime's code pages, its environment and kernel
    registry); the second, read after the first is released and the heap trimmed, is the model's own cost:
    what one more resident model adds, and what the zoo charges it. The timed runs use the second session.
    """
    started = time.perf_counter()
    bundle = open_bundle(Path(request["path"]))
    opened = time.perf_counter()
    feeds = {b: batch_feeds(bundle, b) for b in request["batches"]}  # made before the first reading
    first = _load_once(bundle, feeds, request)
    answer = {"open_seconds": opened - started, "load_seconds": first["load_seconds"], "rss": first["rss"], "heap": first["heap"],
              "anon": first["anon"], "rss_peak": first["rss_peak"], "settings": dataclasses.asdict(first["session"].settings)}
    first.clear()  # the session, its bare runner and their feeds: nothing of the first load may stay referenced
    live = _load_once(bundle, feeds, request)
    answer["again"] = {"load_seconds": live["load_seconds"], "rss": live["rss"]}
    state.update(session=live["session"], feeds=feeds, bare=live["bare"], bare_run=live["bare_run"])
    return answer


def _load_once(bundle, feeds: dict, request: dict) -> dict:
    """Trim, read; load the Session, read; warm up every batch, read; with the warm-up calls' high-water mark.
    `load_seconds` times the Session alone (providers, keys, the onnxruntime session)."""
    rss, anon, heap = [], [], []

    def read() -> None:  # VmRSS and RssAnon from one read of /proc/self/status, glibc's heap beside them
        status = status_bytes("VmRSS", "RssAnon")
        rss.append(status["VmRSS"])
        anon.append(status["RssAnon"])
        heap.append(heap_bytes())

    trim()  # what opening, feed-making or a released session freed, back before the first reading (atlas-default's private memory read -1.9 MiB)
    read()
    started = time.perf_counter()
    session = Session(bundle, **request["settings"])
    loaded = time.perf_counter()
    read()
    peak_is_calls = reset_peak_rss()  # the high-water mark from here on is the calls', not the load's
    graph = bundle.manifest.graph
    bare, bare_run = {}, session.bare_runner()
    for b, (data, key) in feeds.items():
        if graph.key_input is not None:
            session.use_key(key or session.keys.names()[0])
        full = dict(data)
        if graph.key_input is not None:
            full[graph.key_input.name] = session.bound_key.vector
        bare[b] = full
        for _ in range(request["warmup"]):
            bare_run(full)
            session.run(data)  # last: what is read next is what the runner leaves between its calls (it may trim the heap)
    read()
    peak = peak_rss_bytes() if peak_is_calls else None  # without a reset it would be the load's peak
    return {"session": session, "bare": bare, "bare_run": bare_run, "load_seconds": loaded - started, "rss": rss, "heap": heap, "anon": anon,
            "rss_peak": peak}


def _time(request: dict, state: dict) -> dict:
    """`runs` calls of Runner.run and as many bare InferenceSession.run calls of the same feeds, alternating.

    One untimed pair first: the worker has been idle while the others ran, so its first call is cold.
    Which of the two goes first alternates from pair to pair across chunks, not from each chunk's start:
    with chunks of 2-3 runs (60 runs over 25 rounds) the runner was always a chunk's first timed call and
    went first in more pairs than the bare run, and atlas-wide int8 read +5.4-8.1% over a bare run where
    1,000 calls alternated read -1.1% to +2.5%.
    """
    session, plain = state["session"], state["bare_run"]
    data, key = state["feeds"][request["batch"]]
    full = state["bare"][request["batch"]]
    if key is not None:
        session.use_key(key)  # nothing looked up when it is bound already
    session.run(data)
    plain(full)
    clock = time.perf_counter_ns
    runner_ns, bare_ns = [], []
    pairs = state.setdefault("pairs", {})
    start = pairs.get(request["batch"], 0)
    pairs[request["batch"]] = start + request["runs"]
    for i in range(start, start + request["runs"]):
        if i % 2:
            t0 = clock()
            plain(full)
            t1 = clock()
            session.run(data)
            t2 = clock()
            bare_ns.append(t1 - t0)
            runner_ns.append(t2 - t1)
        else:
            t0 = clock()
            session.run(data)
            t1 = clock()
            plain(full)
            t2 = clock()
            runner_ns.append(t1 - t0)
            bare_ns.append(t2 - t1)
    return {"runner_ns": runner_ns, "bare_ns": bare_ns}


if __name__ == "__main__":
    serve()
