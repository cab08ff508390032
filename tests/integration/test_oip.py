"""`gfedge serve` as an Open Inference Protocol server, driven by tritonclient.http, with torch blocked.

Acceptance for issue 12: health and metadata match the manifest; infer with JSON and with binary
tensors returns exactly what the runtime's own Session returns; /metrics parses and its counters
match the requests sent; safe defaults (loopback only without a token, bearer token, CSRF and DNS
rebinding refused, body/JSON/connection/time limits); a request 100x over its bound refused
while models load, and after a restart every model still loads; SIGTERM with 8 clients in flight
exits 0 and loses no request.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest

from geofractal_edge.artifacts import open_bundle
from geofractal_edge.runtimes import load
from tests.conftest import gfedge
from tests.integration.zoo_server import Client, oip, params, start

tritonclient_http = pytest.importorskip("tritonclient.http")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

X = np.linspace(0.0, 1.0, 300, dtype=np.float32)[:48]
TOKEN = "t0k3n-" + "x" * 30


@pytest.fixture(scope="module")
def zoo_dir(bundle_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("oip-zoo")
    for name, precision in (("a-fp32", "fp32"), ("c-int8", "int8")):
        shutil.copytree(bundle_factory(precision), root / name)
    return root


@pytest.fixture(scope="module")
def served(zoo_dir):
    server = start(zoo_dir, "--budget", "64", "--max-loaded", "2", "--rescan", "0")
    yield server
    code, stderr = server.stop()
    assert code == 0 and "Traceback" not in stderr and "torch is blocked" not in stderr, stderr


@pytest.fixture()
def triton(served):
    client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{served.port}")
    yield client
    client.close()


def _input(x, binary: bool):
    tensor = tritonclient_http.InferInput("x", list(np.shape(x)), "FP32")
    tensor.set_data_from_numpy(np.asarray(x, dtype=np.float32), binary_data=binary)
    return tensor


# ---- the protocol ----


def test_live_ready_and_metadata_match_the_manifest(triton, zoo_dir):
    assert triton.is_server_live() and triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "gfedge" and {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])
    for name in ("a-fp32", "c-int8"):
        manifest = open_bundle(zoo_dir / name).manifest
        assert triton.is_model_ready(name) and triton.is_model_ready(name, model_version="1")
        model = triton.get_model_metadata(name)
        assert model["name"] == name and model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
        dtypes = {"float32": "FP32", "int64": "INT64"}
        want_in = [{"name": d.name, "datatype": dtypes[d.dtype], "shape": [s if isinstance(s, int) else -1 for s in d.shape]}
                   for d in manifest.graph.data_inputs]
        want_out = [{"name": d.name, "datatype": dtypes[d.dtype], "shape": [s if isinstance(s, int) else -1 for s in d.shape]}
                    for d in manifest.outputs]
        assert model["inputs"] == want_in and model["outputs"] == want_out
        assert triton.get_model_metadata(name, model_version="1") == model
    assert triton.is_model_ready("_zoo")
    assert not triton.is_model_ready("a-fp32", model_version="2")
    with pytest.raises(tritonclient_http.InferenceServerException, match="no model 'nope'"):
        triton.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_returns_exactly_what_the_runtime_returns(triton, zoo_dir, binary):
    """JSON or binary tensors in and out, named model or `_zoo`, a length the bundle was not traced with."""
    for name, key, n in (("a-fp32", "assignment", 48), ("c-int8", "async", 31), ("a-fp32", "async", 7)):
        x = np.linspace(0.0, 1.0, n, dtype=np.float32)
        with load(zoo_dir / name) as session:
            want = session.run({"x": x}, key=key)
        wanted = [tritonclient_http.InferRequestedOutput("logits", binary_data=binary)]
        result = triton.infer(name, [_input(x, binary)], outputs=wanted, request_id=f"req-{name}-{n}", parameters={"key": key})
        np.testing.assert_array_equal(result.as_numpy("logits"), want["logits"])
        response = result.get_response()
        assert response["id"] == f"req-{name}-{n}" and response["model_name"] == name and response["model_version"] == "1"
        assert ("parameters" in response["outputs"][0]) == binary  # binary_data_size when binary
    chosen = triton.infer("_zoo", [_input(X, binary)], parameters={"key": "assignment", "family": "atlas"})  # no outputs named: all, binary
    with load(zoo_dir / chosen.get_response()["model_name"]) as session:
        np.testing.assert_array_equal(chosen.as_numpy("logits"), session.run({"x": X}, key="assignment")["logits"])


def test_bad_requests_name_the_problem(triton, served):
    c = Client(served.port)
    cases = [
        ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [0.0, 0.5, 1.0]}]}, "datatype FP64"),
        ({"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [0.0, 0.5, 1.0]}]}, "its shape says [4]"),
        ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [0.0, True, 1.0]}]}, "holds bool"),
        ({"inputs": [{"name": "y", "shape": [3], "datatype": "FP32", "data": [0.0, 0.5, 1.0]}]}, "unknown input"),
        ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [0.0, 0.5, 1.0]}], "parameters": {"famliy": "atlas"}}, "unknown field"),
        ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [0.0, 0.5, 1.0]}], "outputs": [{"name": "nope"}]}, "unknown output"),
    ]
    for body, phrase in cases:
        status, answer = c.call("/v2/models/a-fp32/infer", body)
        assert status == 400 and phrase in answer["error"] + answer["fix"], (body, answer)
    status, answer = c.call("/v2/models/a-fp32/infer", b"[" * 100 + b"]" * 100)
    assert status == 400 and "nested deeper than 32" in answer["error"]
    status, answer = c.call("/v2/models/a-fp32/infer", b'{"inputs": [{"name": "x", "shape": [1' + b"0" * 40 + b']}]}')
    assert status == 400 and "integer of 41 digits" in answer["error"]
    c.close()


# ---- /metrics ----


def _metrics(port: int) -> dict:
    """{(sample name, frozenset(labels)): value} of every sample /metrics gives, parsed by prometheus_client."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text = response.read().decode()
    assert response.status == 200 and response.getheader("content-type").startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _get(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_parse_and_count_the_requests_sent(served, triton):
    before = _metrics(served.port)
    for _ in range(5):
        triton.infer("a-fp32", [_input(X, True)], parameters={"key": "assignment"})
    for _ in range(3):
        triton.infer("c-int8", [_input(X, False)], parameters={"key": "async"})
    for _ in range(2):
        with pytest.raises(tritonclient_http.InferenceServerException):
            triton.infer("a-fp32", [_input(X, False)], parameters={"key": "no-such-key"})
    with pytest.raises(tritonclient_http.InferenceServerException):
        triton.infer("no-such-model", [_input(X, False)])
    Client(served.port).call("/v2/models/a-fp32/infer", b"{}", headers={"Content-Type": "text/plain"})  # refused before any work
    after = _metrics(served.port)

    def delta(name, **labels):
        return _get(after, name, **labels) - _get(before, name, **labels)

    a, c = {"model": "a-fp32", "version": "1"}, {"model": "c-int8", "version": "1"}
    assert delta("nv_inference_request_success_total", **a) == 5 and delta("nv_inference_request_success_total", **c) == 3
    assert delta("nv_inference_count_total", **a) == 5 and delta("nv_inference_exec_count_total", **c) == 3
    assert delta("nv_inference_request_failure_total", **a, reason="OTHER") == 2
    assert delta("nv_inference_request_failure_total", model="_unknown", version="1", reason="OTHER") == 1
    assert delta("nv_inference_request_duration_us_total", **a) > 0 and delta("nv_inference_compute_infer_duration_us_total", **c) > 0
    assert delta("gfedge_request_duration_seconds_count", model="a-fp32") == 5
    assert delta("gfedge_http_refused_total", reason="content_type") == 1
    assert _get(after, "gfedge_budget_bytes") == 64 << 20
    assert _get(after, "gfedge_model_estimate_bytes", model="c-int8") > 0
    resident = [m for m in ("a-fp32", "c-int8") if _get(after, "gfedge_model_state", model=m, state="resident") == 1]
    assert resident and all(_get(after, "gfedge_model_resident_bytes", model=m) > 0 for m in resident)
    assert _get(after, "gfedge_selections_total") >= 8 and ("gfedge_swaps_total", frozenset()) in after
    assert _get(after, "gfedge_requests_in_flight") == 1  # this scrape


# ---- safe by default ----


def test_csrf_and_dns_rebinding_are_refused_and_ids_are_unguessable_and_single_use(served):
    c = Client(served.port)
    body = json.dumps(oip(X, key="assignment")).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, answer = c.call("/v2/models/a-fp32/infer", body, headers={"Content-Type": kind})
        assert status == 415, (kind, answer)
    status, answer = c.call("/v2/models/a-fp32/infer", body, headers={"Origin": "http://evil.example"})
    assert status == 403 and "evil.example" in answer["error"]
    status, answer = c.call("/v2/health/live", headers={"Host": "evil.example"})
    assert status == 403
    status, answer = c.call("/v2/models/a-fp32/infer", body, headers={"Origin": f"http://127.0.0.1:{served.port}"})
    assert status == 200
    ids = [params(c.infer(X, key="assignment")[1])["request_id"] for _ in range(3)]
    assert len(set(ids)) == 3 and all(len(i) >= 20 and i.replace("-", "").replace("_", "").isalnum() for i in ids)
    assert c.call("/v2/gfedge/feedback", {"request_id": ids[0], "quality": 1.0})[0] == 200
    assert c.call("/v2/gfedge/feedback", {"request_id": ids[0], "quality": 1.0})[0] == 404  # once
    c.close()


def test_without_a_token_file_the_server_will_not_bind_a_non_loopback_address(zoo_dir):
    started = time.perf_counter()
    result = gfedge("serve", zoo_dir, "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert result.returncode == 2 and "without a token" in result.stderr and "--token-file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and time.perf_counter() - started < 30


@pytest.fixture(scope="module")
def guarded(zoo_dir, tmp_path_factory):
    """A server with a token, 4 connections at most, 1 MiB bodies and a 2 s request timeout."""
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server = start(zoo_dir, "--rescan", "0", "--token-file", token_file, "--max-connections", "4", "--max-body", "1", "--request-timeout", "2")
    yield server, token_file
    code, stderr = server.stop()
    assert code == 0 and "Traceback" not in stderr, stderr


def test_a_token_is_checked_on_every_request(guarded):
    server, token_file = guarded
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        c = Client(server.port)
        status, answer = c.call("/v2/health/live", headers=headers)
        assert status == 401 and "bearer token" in answer["error"], headers
        c.close()
    triton = tritonclient_http.InferenceServerClient(f"127.0.0.1:{server.port}")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert triton.is_server_live(headers=auth)
    result = triton.infer("a-fp32", [_input(X, True)], parameters={"key": "assignment"}, headers=auth)
    assert result.as_numpy("logits").shape[0] == 48
    triton.close()
    assert gfedge("ps", "--port", server.port, "--token-file", token_file, timeout=60).returncode == 0
    refused = gfedge("ps", "--port", server.port, timeout=60)
    assert refused.returncode == 2 and "bearer token" in refused.stderr


def test_limits_body_size_connections_and_time(guarded):
    server, _ = guarded
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:  # refused on its Content-Length, before the body is sent
        s.sendall(f"POST /v2/models/a-fp32/infer HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {2 << 20}\r\n\r\n".encode())
        reply = _read_until_closed(s)
    assert reply.startswith("HTTP/1.1 413") and "over 1,048,576" in reply, reply
    held = [Client(server.port, token=TOKEN) for _ in range(4)]
    try:
        for h in held:
            assert h.call("/v2/health/live")[0] == 200  # four keep-alive connections now
        extra = Client(server.port, token=TOKEN)
        extra.connection.request("GET", "/v2/health/live", headers={"Authorization": f"Bearer {TOKEN}"})
        assert extra.connection.getresponse().status == 503
        extra.close()
    finally:
        for h in held:
            h.close()
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:  # a body that never finishes arriving
        s.sendall(f"POST /v2/models/a-fp32/infer HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"inputs\"".encode())
        started = time.perf_counter()
        reply = _read_until_closed(s)
    assert reply.startswith("HTTP/1.1 408") and 1.5 < time.perf_counter() - started < 10, reply


def _read_until_closed(s: socket.socket) -> str:
    parts = []
    while chunk := s.recv(65536):
        parts.append(chunk)
    return b"".join(parts).decode()


def test_a_token_file_others_can_read_is_refused(zoo_dir, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    result = gfedge("serve", zoo_dir, "--port", "0", "--token-file", token_file, timeout=60)
    assert result.returncode == 2 and "chmod 600" in result.stderr


# ---- memory and restarts ----


def test_a_request_100x_over_its_bound_while_models_load_then_after_a_restart_every_model_still_loads(bundle_factory, tmp_path):
    root = tmp_path / "zoo"
    for name, precision in (("a-fp32", "fp32"), ("c-int8", "int8")):
        shutil.copytree(bundle_factory(precision), root / name)
    bound = open_bundle(root / "a-fp32").manifest.graph.dim_ranges["n"].max
    values = np.random.default_rng(0).random(100 * bound).round(6).tolist()
    body = {"inputs": [{"name": "x", "shape": [len(values)], "datatype": "FP32", "data": values}], "parameters": {"key": "assignment"}}
    server = start(root, "--budget", "64", "--rescan", "0")
    try:
        before = server.rss_bytes()
        stop, loads = threading.Event(), []

        def churn() -> None:  # loads measured while the large body is parsed
            c = Client(server.port)
            while not stop.is_set():
                for name in ("a-fp32", "c-int8"):
                    for action in ("unload", "load"):
                        status, answer = c.call(f"/v2/repository/models/{name}/{action}", {})
                        loads.append(status if status == 200 else (status, answer))
            c.close()

        worker = threading.Thread(target=churn)
        worker.start()
        status, answer = Client(server.port).call("/v2/models/a-fp32/infer", body)
        stop.set()
        worker.join()
        assert status == 400 and f"outside the declared 1..{bound}" in answer["error"], answer
        assert loads and all(s == 200 or s[0] == 503 for s in loads), [s for s in loads if s != 200]  # 503: busy serving, allowed
        grown = server.rss_bytes() - before
        assert grown < 50 << 20, f"the server grew by {grown / (1 << 20):.1f} MiB"
    finally:
        code, stderr = server.stop()
    assert code == 0, stderr
    book = json.loads((root / ".gfedge-measured.json").read_text())
    estimates = {open_bundle(root / n).model_bytes: n for n in ("a-fp32", "c-int8")}
    assert book and all(0 <= record["measured_bytes"] <= 4 * max(estimates) + (32 << 20) for record in book.values()), book  # no outlier kept
    again = start(root, "--budget", "64", "--rescan", "0")
    try:
        triton = tritonclient_http.InferenceServerClient(f"127.0.0.1:{again.port}")
        for name in ("a-fp32", "c-int8"):
            triton.load_model(name)
            assert triton.infer(name, [_input(X, True)], parameters={"key": "async"}).as_numpy("logits").shape[0] == 48
        triton.close()
    finally:
        code, stderr = again.stop()
    assert code == 0, stderr
    print(f"refused {len(values):,} values while {len(loads)} loads/unloads ran; grew {grown / (1 << 20):.1f} MiB; every model loads after a restart")


# ---- graceful shutdown ----


def drain_trial(zoo_dir, *, clients: int = 8, requests: int = 100, signal_after: int = 150) -> dict:
    """SIGTERM while `clients` keep-alive clients send `requests` each; every request must be answered or refused.

    Answered: a 200 (or any reply with a body). Refused: 503 "shutting down" or connection refused;
    a client stops at its first refusal, as a real one would move to another server. Lost: a reset
    or a closed connection with no reply."""
    server = start(zoo_dir, "--budget", "64", "--max-loaded", "2", "--rescan", "0")
    outcomes: list[list[str]] = [[] for _ in range(clients)]
    models = ("_zoo", "a-fp32", "c-int8")

    def client(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for j in range(requests):
            body = json.dumps(oip(X, key=("assignment", "async")[(i + j) % 2])).encode()
            try:
                connection.request("POST", f"/v2/models/{models[(i + j) % 3]}/infer", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
            except ConnectionRefusedError:
                outcomes[i].append("refused")
                return
            except (OSError, http.client.HTTPException) as exc:
                outcomes[i].append(f"lost: {exc!r}")
                return
            if response.status == 200:
                outcomes[i].append("answered")
            elif response.status == 503 and b"shutting down" in data:
                outcomes[i].append("refused")
                return
            else:
                outcomes[i].append(f"status {response.status}: {data[:100]!r}")
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while sum(len(o) for o in outcomes) < signal_after and time.time() < deadline:
        time.sleep(0.005)
    signalled = time.perf_counter()
    code, stderr = server.stop(timeout=60)
    exited_s = time.perf_counter() - signalled
    for t in threads:
        t.join()
    flat = [o for os_ in outcomes for o in os_]
    return {"code": code, "stderr": stderr, "answered": flat.count("answered"), "refused": flat.count("refused"),
            "bad": [o for o in flat if o not in ("answered", "refused")], "unsent": clients * requests - len(flat), "exit_s": exited_s}


def _assert_clean(trial: dict) -> None:
    assert trial["code"] == 0 and not trial["bad"], trial
    assert trial["answered"] >= 150 and "Traceback" not in trial["stderr"], trial


def test_sigterm_with_8_clients_in_flight_exits_0_and_loses_nothing(zoo_dir):
    for _ in range(3):
        trial = drain_trial(zoo_dir)
        _assert_clean(trial)
        print(f"drain: {trial['answered']} answered, {trial['refused']} refused, {trial['unsent']} unsent, exit 0 after {trial['exit_s']:.2f} s")


@pytest.mark.slow
def test_sigterm_drain_ten_trials(zoo_dir):
    trials = [drain_trial(zoo_dir) for _ in range(10)]
    for trial in trials:
        _assert_clean(trial)
    print("drain x10:", [(t["answered"], t["refused"], round(t["exit_s"], 2)) for t in trials])


# ---- the README's serving examples ----


def _readme_serving_section() -> str:
    from tests.conftest import ROOT

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Serving a zoo over the Open Inference Protocol", 1)[1].split("\n## ", 1)[0]


def test_readme_tritonclient_example_runs(served):
    import re
    import subprocess
    import sys

    (code,) = re.findall(r"```python\n(.*?)```", _readme_serving_section(), flags=re.S)
    assert '"127.0.0.1:8470"' in code
    code = code.replace('"127.0.0.1:8470"', repr(f"127.0.0.1:{served.port}"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    model, shape = result.stdout.split(" ", 1)
    assert model in ("a-fp32", "c-int8") and shape.startswith("(7, ")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_example_runs(served):
    import re
    import subprocess

    (command,) = re.findall(r"```\n(curl .*?)```", _readme_serving_section(), flags=re.S)
    command = command.replace("localhost:8470", f"localhost:{served.port}")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    answer = json.loads(result.stdout)
    assert answer["model_name"] in ("a-fp32", "c-int8") and answer["outputs"][0]["shape"][0] == 3, answer
