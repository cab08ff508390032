"""The model zoo on real tiny bundles: in process (pins, quarantine, re-measured unloads, outlier
costs not remembered) and as `gfedge serve` (Open Inference Protocol) with torch blocked: 8
concurrent clients x 500 requests while swapping, killed clients, corrupted and malformed bundles
dropped in while serving, bad key files at startup, keys hot-added (only under the folders named at
start), an input 100x over its bound refused without memory growth, feedback, `gfedge ps`.
tritonclient, /metrics, the security defaults and the drain on SIGTERM are in test_oip.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from geofractal_edge.artifacts import Key, open_bundle, seal, write_key
from geofractal_edge.runtimes.zoo import NoCandidateError, Zoo
from tests.conftest import ROOT, check_heap_garbage_lands_mid_heap, gfedge, heap_garbage
from tests.integration.test_device_side_without_torch import BLOCK_TORCH
from tests.integration.test_zoo_integrity import MALFORMED, reseal_edited, write_bad_keys
from tests.integration.zoo_server import Client, oip, params, start

X = np.linspace(0.0, 1.0, 300, dtype=np.float32)[:48]


@pytest.fixture(scope="module")
def zoo_dir(bundle_factory, tmp_path_factory):
    """Three models: two copies of the fp32 bundle and the int8 one."""
    root = tmp_path_factory.mktemp("zoo")
    for name, precision in (("a-fp32", "fp32"), ("b-fp32", "fp32"), ("c-int8", "int8")):
        shutil.copytree(bundle_factory(precision), root / name)
    return root


def _private_zoo(zoo_dir, tmp_path, *names):
    root = tmp_path / "zoo"
    root.mkdir()
    for name in names:
        shutil.copytree(zoo_dir / name, root / name)
    return root


def _broken_but_sealed(src, dst):
    """Hashes all valid, graph unloadable: fails at load, not at registration."""
    shutil.copytree(src, dst)
    (dst / "model.onnx").write_bytes(b"this is not an onnx graph")
    data = {k: v for k, v in json.loads((dst / "manifest.json").read_text()).items() if k != "files"}
    seal(dst, data)


# ---- in process ----


def test_a_model_that_fails_to_load_is_quarantined_and_the_request_moves_on(zoo_dir, tmp_path):
    root = _private_zoo(zoo_dir, tmp_path, "a-fp32")
    _broken_but_sealed(zoo_dir / "a-fp32", root / "0-broken")  # ranks first among equals
    zoo = Zoo(root, budget_bytes=64 << 20)
    answer = zoo.infer({"x": X}, key="assignment")
    assert answer.model == "a-fp32"
    broken = zoo.describe("0-broken")
    assert broken["state"] == "quarantined" and "load failed" in broken["reason"] and "onnxruntime cannot load" in broken["reason"]
    assert zoo.metrics.summary()["failures"] == 1
    with pytest.raises(NoCandidateError, match="quarantined: 0-broken"):
        zoo.infer({"x": X}, key="assignment", model="0-broken")
    zoo.close()


def test_a_pinned_model_is_never_evicted_and_the_budget_waits_for_it(zoo_dir, tmp_path):
    root = _private_zoo(zoo_dir, tmp_path, "a-fp32", "b-fp32")
    zoo = Zoo(root, budget_bytes=64 << 20)
    zoo.load("a-fp32")
    zoo.budget_bytes = int(zoo.describe("a-fp32")["expected_bytes"] * 1.5)  # one model fits, not two
    session = zoo.state.get("a-fp32").session
    states = []

    def slow_run(feeds, _run=session.run):
        time.sleep(0.6)
        states.append(zoo.describe("a-fp32")["state"])
        return _run(feeds)

    session.run = slow_run
    first = {}
    worker = threading.Thread(target=lambda: first.setdefault("answer", zoo.infer({"x": X}, key="assignment", model="a-fp32")))
    worker.start()
    time.sleep(0.2)
    second = zoo.infer({"x": X}, key="assignment", model="b-fp32")  # must wait for a-fp32's run to end
    worker.join()
    assert states == ["resident"]
    assert first["answer"].model == "a-fp32" and second.model == "b-fp32"
    assert second.seconds >= 0.3 and second.swapped
    a = zoo.describe("a-fp32")
    assert a["state"] == "registered" and a["evictions"] == 1 and a["pins"] == 0
    assert a["freed_bytes"] is not None  # re-measured after the unload
    assert zoo.accounted_bytes() <= zoo.budget_bytes
    zoo.close()


def test_unload_is_measured_and_feedback_moves_trust(zoo_dir, tmp_path):
    root = _private_zoo(zoo_dir, tmp_path, "c-int8")
    zoo = Zoo(root, budget_bytes=64 << 20)
    answer = zoo.infer({"x": X.tolist()}, key="async")  # JSON-style lists take the manifest's dtype
    assert answer.outputs["logits"].shape == (48, len(zoo.state.get("c-int8").manifest.to_dict()["task"]["vocab"]))
    before = zoo.trust.get("c-int8", "async")
    after = zoo.feedback(answer.request_id, 0.0)["trust"]
    assert after < before
    with pytest.raises(Exception, match="no answered request"):
        zoo.feedback(answer.request_id, 1.0)  # once per request
    loaded = zoo.describe("c-int8")
    assert loaded["measured_bytes"] > 0 and loaded["estimate_bytes"] > 0
    unloaded = zoo.unload("c-int8")
    assert unloaded["state"] == "registered" and isinstance(unloaded["freed_bytes"], int)
    zoo.close()


def test_a_load_cost_that_is_an_outlier_against_the_estimate_counts_as_expected_and_is_not_remembered(zoo_dir, tmp_path, monkeypatch):
    root = _private_zoo(zoo_dir, tmp_path, "a-fp32", "c-int8")
    zoo = Zoo(root, budget_bytes=256 << 20)
    real_new_session = zoo.residency.new_session
    body: list[np.ndarray] = []

    def beside_a_large_body(entry):  # 100 MiB of the process's own, written, while this model loads: a request body parsed
        body.append(np.ones(100 << 20, np.uint8))
        return real_new_session(entry)

    try:
        with monkeypatch.context() as patched:
            patched.setattr(zoo.residency, "new_session", beside_a_large_body)
            expected = zoo.describe("a-fp32")["expected_bytes"]
            zoo.load("a-fp32")
        assert zoo.describe("a-fp32")["measured_bytes"] == expected  # what was reserved for it, not the noise
        body.clear()
        zoo.load("c-int8")
        book = json.loads((root / ".gfedge-measured.json").read_text())
        assert set(book) == {zoo.state.get("c-int8").manifest_sha}, book  # only the plausible one is remembered
    finally:
        zoo.close()
    restarted = Zoo(root, budget_bytes=8 << 20)  # would refuse a-fp32 had its noisy cost been remembered
    assert restarted.load("a-fp32")["state"] == "resident"
    restarted.close()


def test_memory_freed_before_a_load_or_an_unload_is_not_counted_as_that_models(zoo_dir, tmp_path):
    # The loader trims the heap after it makes the session; without a trim before the first reading, pages freed
    # earlier left inside a load's measured window (-57 MiB for a 1 MiB model: not remembered), and an unload
    # counted them as what the model freed (55.6 MiB).
    check_heap_garbage_lands_mid_heap()
    root = _private_zoo(zoo_dir, tmp_path, "a-fp32", "c-int8")
    zoo = Zoo(root, budget_bytes=256 << 20)
    zoo.load("a-fp32")  # the first load faults onnxruntime's code in; the next one is measured on its own
    kept = heap_garbage()
    zoo.load("c-int8")
    cost = zoo.describe("c-int8")["measured_bytes"]
    assert 0 < cost < 32 << 20, cost
    book = json.loads((root / ".gfedge-measured.json").read_text())
    assert book[zoo.state.get("c-int8").manifest_sha]["measured_bytes"] == cost  # plausible, so remembered
    kept += heap_garbage()
    freed = zoo.unload("c-int8")["freed_bytes"]
    assert freed < 32 << 20, freed  # not the ~57 MiB freed before it
    del kept
    zoo.close()


# ---- gfedge serve, torch blocked ----


@pytest.fixture(scope="module")
def server(zoo_dir, tmp_path_factory):
    """`gfedge serve` in a process where importing torch fails; at most two of the three models resident.
    It starts with a key folder of bad key files (NaN, no metadata, lying dim, another core) and one good one;
    keys/hot inside it is hot-added later (a hot-added folder must lie under a folder named at start)."""
    bad_keys = tmp_path_factory.mktemp("bad-keys")
    refused = write_bad_keys(bad_keys, zoo_dir / "a-fp32", good="startup-good")
    keys = bad_keys / "hot"
    keys.mkdir()
    served = start(zoo_dir, "--budget", "64", "--max-loaded", "2", "--rescan", "0.5", "--keys", bad_keys)
    yield {"port": served.port, "ready": served.ready, "served": served, "zoo": zoo_dir, "keys": keys, "bad_keys": bad_keys, "refused": refused}
    code, stderr = served.stop()
    assert code == 0, stderr
    assert "torch is blocked" not in stderr, stderr
    assert "Traceback" not in stderr, stderr


def _half_request(port: int, kind: str) -> subprocess.Popen:
    """A client process that is killed mid-request: mid-body, or before reading its answer."""
    body = json.dumps(oip(X, key="assignment"))
    length = len(body) * 10 if kind == "mid-body" else len(body)
    script = textwrap.dedent(
        f"""
        import socket, sys, time
        s = socket.create_connection(("127.0.0.1", {port}))
        s.sendall(b"POST /v2/models/_zoo/infer HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nContent-Type: application/json\\r\\nContent-Length: {length}\\r\\n\\r\\n")
        s.sendall({body!r}.encode())
        print("sent", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "sent"
    return proc


@pytest.mark.slow
def test_eight_clients_500_requests_each_while_swapping(server, bundle_factory):
    """Two of three models fit (--max-loaded 2); every 40th request names a model, so swaps happen; half the
    requests send their tensor as binary (the OIP binary tensor extension), half as JSON. 0 lost; p99 printed."""
    port, models = server["port"], ("a-fp32", "b-fp32", "c-int8")
    _, before = Client(port).call("/v2/gfedge/status")
    results: list[list] = [[] for _ in range(8)]
    latencies: list[float] = []

    def client(i: int) -> None:
        c = Client(port)
        for j in range(500):
            key = ("assignment", "async")[(i + j) % 2]
            model = models[(i + j // 40) % 3] if j % 40 == 5 * i % 40 else "_zoo"  # forced swaps: three models, two slots
            t = time.perf_counter()
            if j % 2:
                status, answer = c.infer(X, model=model, key=key)
            else:
                status, answer = _binary_infer(c, model, key)
            latencies.append(time.perf_counter() - t)
            results[i].append(("infer", status, answer))
            if status == 200 and j % 10 == 0:
                results[i].append(("feedback", *c.call("/v2/gfedge/feedback", {"request_id": params(answer)["request_id"], "quality": 1.0})))
        c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(0.5)
    victims = [_half_request(port, "mid-body"), _half_request(port, "no-read")]
    corrupt = server["zoo"] / "z-corrupt"
    shutil.copytree(bundle_factory("fp32"), corrupt)
    data = bytearray((corrupt / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "model.onnx").write_bytes(bytes(data))
    time.sleep(0.3)
    for v in victims:
        v.kill()
        v.wait()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    calls = [r for rs in results for r in rs]
    failed = [r for r in calls if r[1] != 200]
    assert not failed, failed[:3]
    infers = [answer for kind, _, answer in calls if kind == "infer"]
    assert len(infers) == 4000 and len({params(a)["request_id"] for a in infers}) == 4000  # nothing failed, nothing lost
    assert all(len(params(a)["decoded"]) == 48 for a in infers)
    assert sum(kind == "feedback" for kind, _, _ in calls) == 400
    _, after = Client(port).call("/v2/gfedge/status")
    metrics = after["metrics"]
    swaps = metrics["swaps"] - before["metrics"]["swaps"]
    assert swaps >= 20, metrics
    assert metrics["errors"] == 0
    assert all(m["pins"] == 0 for m in after["models"]), after["models"]
    deadline = time.time() + 10
    while not any(m["id"] == "z-corrupt" for m in after["models"]) and time.time() < deadline:
        time.sleep(0.2)
        _, after = Client(port).call("/v2/gfedge/status")
    corrupt_status = next(m for m in after["models"] if m["id"] == "z-corrupt")
    assert corrupt_status["state"] == "quarantined" and "corrupted" in corrupt_status["reason"]
    status, answer = Client(port).infer(X, key="async")
    assert status == 200 and answer["model_name"] != "z-corrupt"
    p50, p99 = (float(np.percentile(latencies, q) * 1e3) for q in (50, 99))
    print(f"8 x 500 requests in {seconds:.1f} s ({4000 / seconds:.0f}/s), {swaps} swaps, client latency p50 {p50:.1f} ms p99 {p99:.1f} ms")


def _binary_infer(c: Client, model: str, key: str) -> tuple[int, dict]:
    """The binary tensor extension by hand: JSON header, then the FP32 bytes; outputs as JSON."""
    header = json.dumps({"inputs": [{"name": "x", "shape": [len(X)], "datatype": "FP32", "parameters": {"binary_data_size": X.nbytes}}],
                         "parameters": {"key": key}}).encode()
    return c.call(f"/v2/models/{model}/infer", header + X.astype("<f4").tobytes(),
                  headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})


def test_http_errors_keys_power_load_unload(server, zoo_dir, tmp_path):
    c = Client(server["port"])
    status, answer = c.infer(X, key="no-such-key")
    assert status == 404 and "no-such-key" in answer["error"] and "assignment" in answer["fix"]
    status, answer = c.infer([2.0], key="async")
    assert status == 400 and "outside" in answer["error"]
    status, answer = c.call("/v2/gfedge/feedback", {"request_id": "never", "quality": 1.0})
    assert status == 404
    status, _ = c.call("/nowhere", {})
    assert status == 404
    # hot-added keys: one made for this core is served, one made for another core is refused
    keys = server["keys"]
    shutil.copy(zoo_dir / "a-fp32" / "keys" / "async.safetensors", keys / "fresh.safetensors")
    bundle = open_bundle(zoo_dir / "a-fp32")
    write_key(keys / "alien.safetensors", Key(name="alien", vector=np.zeros(bundle.manifest.keys.dim, np.float32), core_sha256="0" * 64, family="atlas"))
    status, listing = c.call("/v2/gfedge/keys", {"folder": str(keys)})
    assert status == 200 and any(k["name"] == "fresh" for k in listing["folder_keys"])
    assert any("alien" in r["path"] and "no model in this zoo has that core" in r["reason"] for r in listing["rejected"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status, answer = c.call("/v2/gfedge/keys", {"folder": str(elsewhere)})  # not under the zoo or a --keys folder
    assert status == 403 and "outside" in answer["error"], answer
    status, answer = c.call("/v2/gfedge/keys", {"folder": str(server["bad_keys"] / "hot" / ".." / ".." / elsewhere.name)})
    assert status == 403, answer
    status, fresh = c.infer(X, key="fresh")
    assert status == 200 and fresh["outputs"][0]["shape"][0] == 48 and len(fresh["outputs"][0]["data"]) == 48 * fresh["outputs"][0]["shape"][1]
    status, _ = c.infer(X, key="alien")
    assert status == 404
    assert c.call("/v2/gfedge/power", {"low": True}) == (200, {"low_power": True})
    assert c.call("/v2/gfedge/power", {"low": False}) == (200, {"low_power": False})
    assert c.call("/v2/gfedge/power", {"low": "yes"})[0] == 400
    status, loaded = c.call("/v2/repository/models/c-int8/load", {})
    assert status == 200 and loaded["state"] == "resident" and loaded["measured_bytes"] > 0
    status, unloaded = c.call("/v2/repository/models/c-int8/unload", {})
    assert status == 200 and unloaded["state"] == "registered" and unloaded["freed_bytes"] is not None
    assert c.call("/v2/gfedge/prefetch", {"key": "assignment"})[0] == 200
    c.close()


def test_bad_key_files_at_startup_are_listed_with_their_reason_and_the_server_serves(server):
    c = Client(server["port"])
    status, listing = c.call("/v2/gfedge/keys")
    assert status == 200
    rejected = {Path(r["path"]).stem: r["reason"] for r in listing["rejected"] if Path(r["path"]).parent == server["bad_keys"]}
    assert set(rejected) == set(server["refused"]), listing["rejected"]
    for name, phrase in server["refused"].items():
        assert phrase in rejected[name], (name, rejected[name])
        status, answer = c.infer(X, key=name)
        assert status == 404 and name in answer["error"]
    status, answer = c.infer(X, key="startup-good")
    assert status == 200 and params(answer)["decoded"]
    c.close()


def test_malformed_bundles_dropped_in_while_serving_are_refused_with_their_reason(server, bundle_factory):
    names = {f"m-{name}": field for name, (_, field) in MALFORMED.items()}
    for name, (edit, _) in MALFORMED.items():
        reseal_edited(bundle_factory("fp32"), server["zoo"] / f"m-{name}", edit)
    c = Client(server["port"])
    deadline = time.time() + 20
    while True:
        status, listing = c.call("/v2/gfedge/status")
        models = {m["id"]: m for m in listing["models"]}
        if set(names) <= set(models) or time.time() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and set(names) <= set(models), sorted(models)
    for name, field in names.items():
        assert models[name]["state"] == "quarantined" and f"field '{field}'" in models[name]["reason"], models[name]
    status, answer = c.infer(X, key="async")
    assert status == 200 and answer["model_name"] in ("a-fp32", "b-fp32", "c-int8")
    status, answer = c.infer(X, key="async", model="m-inputs-is-5")
    assert status == 404 and "quarantined" in answer["fix"]
    assert c.call("/v2/models/m-inputs-is-5/ready")[1] == {"name": "m-inputs-is-5", "ready": False}
    c.close()


def test_an_input_100x_over_its_bound_is_refused_with_400_without_growing_the_server(server, zoo_dir):
    bound = open_bundle(zoo_dir / "a-fp32").manifest.graph.dim_ranges["n"].max
    values = np.random.default_rng(0).random(100 * bound).round(6)
    body = {"inputs": [{"name": "x", "shape": [len(values)], "datatype": "FP32", "data": values.tolist()}], "parameters": {"key": "assignment"}}
    values = values.astype(np.float32)
    c = Client(server["port"])
    assert c.infer(X, key="assignment")[0] == 200
    before = server["served"].rss_bytes()
    status, answer = c.call("/v2/models/a-fp32/infer", body)  # ~1.6M numbers, ~14 MB of JSON
    grown = server["served"].rss_bytes() - before
    assert status == 400, answer
    assert answer["error"] == f"input 'x' has n={100 * bound} on axis 0, outside the declared 1..{bound}", answer
    assert grown < 50 << 20, f"the server grew by {grown / (1 << 20):.1f} MiB"
    header = json.dumps({"inputs": [{"name": "x", "shape": [100 * bound], "datatype": "FP32", "parameters": {"binary_data_size": values.nbytes}}],
                         "parameters": {"key": "assignment"}}).encode()
    status, answer = c.call("/v2/models/a-fp32/infer", header + values.tobytes(),
                            headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and f"outside the declared 1..{bound}" in answer["error"], answer
    grown = server["served"].rss_bytes() - before
    assert grown < 50 << 20, f"the server grew by {grown / (1 << 20):.1f} MiB"
    assert c.infer(X, key="assignment")[0] == 200
    c.close()
    print(f"refused {100 * bound:,} values over the bound {bound} (JSON and binary); the server grew by {grown / (1 << 20):.1f} MiB")


def test_gfedge_ps_shows_resident_models_without_torch(server):
    Client(server["port"]).call("/v2/repository/models/a-fp32/load", {})
    script = BLOCK_TORCH + textwrap.dedent(
        f"""
        sys.argv = ["gfedge", "ps", "--port", "{server['port']}", "--json"]
        from geofractal_edge.cli.main import main
        main()
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    resident = [m for m in status["models"] if m["state"] == "resident"]
    assert resident and all(m["measured_bytes"] > 0 for m in resident)
    assert {"hits", "loads", "trust", "estimate_bytes"} <= set(resident[0])
    table = gfedge("ps", "--port", server["port"], timeout=60)
    assert table.returncode == 0 and "a-fp32" in table.stdout and "hit rate" in table.stdout


def test_ps_without_a_server_says_how_to_start_one():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    result = gfedge("ps", "--port", free, timeout=60)
    assert result.returncode == 2 and "gfedge serve" in result.stderr and "Traceback" not in result.stderr


def test_one_zoo_serves_every_family_under_one_budget(bundle_factory, trix_bundle_factory, collective_bundle_factory, encoder_bundle_factory, tmp_path):
    """Atlas (key input), TriX (2-bit packed tiles), the digits collective and the MiniLM encoder,
    each chosen by family and answering exactly what its own Session answers."""
    from geofractal_edge.runtimes import Session

    bundles = {"atlas": bundle_factory("int8"), "trix": trix_bundle_factory("int8"), "collective": collective_bundle_factory("fp32"),
               "collective-encoder": encoder_bundle_factory("int8")}
    root = tmp_path / "zoo"
    for family, path in bundles.items():
        shutil.copytree(path, root / family)
    zoo = Zoo(root, budget_bytes=512 << 20, max_loaded=2)  # four models, two resident at a time: swaps happen
    served = set()
    for _ in range(2):
        for family, path in bundles.items():
            bundle = open_bundle(path)
            case = bundle.golden_cases()[0]
            answer = zoo.infer(case.inputs, key=case.key, family=family)
            assert answer.model == family
            want = Session(bundle).run(case.inputs, key=case.key)
            for name, array in want.items():
                np.testing.assert_array_equal(answer.outputs[name], array)
            served.add(answer.model)
    assert served == set(bundles)
    assert zoo.metrics.summary()["swaps"] >= 2 and zoo.metrics.summary()["failures"] == 0
    zoo.close()
