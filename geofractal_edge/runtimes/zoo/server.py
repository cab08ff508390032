"""The zoo as a local HTTP JSON service (standard library ThreadingHTTPServer, 127.0.0.1 only).

    GET  /status                 models (state, bytes measured/estimated, pins, hits, loads, trust), memory, metrics
    GET  /keys                   bundle keys, folder keys and the models that take them, rejected keys with reasons
    GET  /health                 {"ok": true}
    POST /infer     {"inputs": {name: list}, "key"?, "context"?, "family"?, "model"?, "request_id"?, "outputs"?: bool}
    POST /feedback  {"request_id", "quality": 0..1}
    POST /load      {"model"}    POST /unload {"model"}
    POST /prefetch  {"key"? , "context"?, "family"?, "model"?}
    POST /keys      {"folder"?}  hot-add a key folder (without one: rescan the key folders)
    POST /power     {"low": bool}
    POST /rescan                 register bundles dropped into the zoo folder since the last scan

Errors come back as {"error", "fix"} with 400 (bad request), 404 (unknown model, request or no
candidate), 503 (budget held by models in use) or 500 (a bug; the server keeps serving). Inputs
are checked against the chosen model's declared shapes and bounds before any array is built
(`Entry.feeds`), and after a large body the parse garbage is handed back to the OS. One
thread per connection; a client that dies mid-request costs only its own thread, which gives up
after `Handler.timeout` seconds of silence. Only `gfedge serve` imports this module.
"""

from __future__ import annotations

import errno
import json
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from geofractal_edge.errors import GfedgeError
from geofractal_edge.runtimes.zoo.errors import BusyError, NoCandidateError, UnknownModelError, UnknownRequestError

HOST = "127.0.0.1"
MAX_BODY = 64 << 20
TRIM_AFTER_BODY = 1 << 20  # a body this large parses into many times its size in Python objects
_NOT_FOUND = (UnknownModelError, UnknownRequestError, NoCandidateError)


class ZooServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, zoo, *, port: int) -> None:
        self.zoo = zoo
        try:
            super().__init__((HOST, port), Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise GfedgeError(f"port {port} on {HOST} is in use", "pick another --port, or --port 0 for any free one") from None
            raise

    @property
    def port(self) -> int:
        return self.server_address[1]

    def handle_error(self, request, client_address) -> None:
        """A client that vanished (reset, broken pipe, silence) is normal; anything else is printed."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client
    server_version = "gfedge-serve"
    timeout = 30  # seconds a half-sent request may hold its thread

    def log_message(self, format, *args) -> None:  # quiet: one line per request would drown the status
        pass

    def do_GET(self) -> None:
        zoo = self.server.zoo
        routes = {"/status": zoo.status, "/keys": zoo.keys_status, "/health": lambda: {"ok": True}}
        self._send(*self._outcome(routes.get(self.path.split("?")[0])))

    def do_POST(self) -> None:
        length = self.headers.get("Content-Length") or ""
        reply = self._post(self._body())
        if length.isdigit() and int(length) > TRIM_AFTER_BODY:
            self.server.zoo.trim()  # the parsed body is garbage now; without this glibc keeps its tens of MB
        if reply is not None:
            self._send(*reply)

    def _post(self, body: dict | None) -> tuple[int, object] | None:
        if body is None:
            return None  # already answered
        zoo = self.server.zoo
        routes = {
            "/infer": lambda b: _answer_json(zoo.infer(**_infer_args(b)), with_outputs=bool(b.get("outputs"))),
            "/feedback": lambda b: zoo.feedback(_field(b, "request_id"), _field(b, "quality")),
            "/load": lambda b: zoo.load(_field(b, "model")),
            "/unload": lambda b: zoo.unload(_field(b, "model")),
            "/prefetch": lambda b: {"model": zoo.prefetch(**_pick(b, "key", "context", "family", "model"))},
            "/keys": lambda b: zoo.add_key_folder(b["folder"]) if b.get("folder") else (zoo.keyring.rescan(), zoo.keys_status())[1],
            "/power": lambda b: (zoo.set_power(low=bool(_field(b, "low"))), {"low_power": zoo.low_power})[1],
            "/rescan": lambda b: zoo.scan(),
        }
        route = routes.get(self.path.split("?")[0])
        return self._outcome(None if route is None else (lambda: route(body)))

    def _body(self) -> dict | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._send(411, {"error": "a JSON body with Content-Length is required", "fix": "send the request body with its length"})
            return None
        if int(length) > MAX_BODY:
            self._send(413, {"error": f"body of {length} bytes is over {MAX_BODY} bytes", "fix": "send smaller inputs"})
            return None
        try:
            raw = self.rfile.read(int(length)) if int(length) else b"{}"
        except OSError:  # the client went silent or away mid-body
            self.close_connection = True
            return None
        if len(raw) < int(length):
            self.close_connection = True  # the client died mid-request: nobody to answer
            return None
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5,000-digit number, nesting too deep
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0][:120]
            self._send(400, {"error": f"the body is not JSON ({reason})", "fix": "send a JSON object"})
            return None
        if not isinstance(body, dict):
            self._send(400, {"error": "the body must be a JSON object", "fix": 'e.g. {"inputs": {"x": [0.0, 0.5]}, "key": "name"}'})
            return None
        return body

    def _outcome(self, route) -> tuple[int, object]:
        """(status, payload) of one call; user errors are 4xx/503 with the fix, a bug is 500 and printed."""
        if route is None:
            return 404, {"error": f"no endpoint {self.command} {self.path}", "fix": "see the endpoint list in `gfedge serve --help`"}
        try:
            return 200, route()
        except _NOT_FOUND as exc:
            return 404, {"error": exc.problem, "fix": exc.fix}
        except BusyError as exc:
            return 503, {"error": exc.problem, "fix": exc.fix}
        except GfedgeError as exc:
            return 400, {"error": exc.problem, "fix": exc.fix}
        except (KeyError, TypeError) as exc:
            return 400, {"error": f"bad request body ({type(exc).__name__}: {exc})", "fix": "see the endpoint list in `gfedge serve --help`"}
        except Exception as exc:  # a bug: report it, keep serving
            traceback.print_exc(file=sys.stderr)
            return 500, {"error": f"bug in geofractal_edge: {type(exc).__name__}: {exc}", "fix": "please report it with the server's stderr"}

    def _send(self, code: int, payload) -> None:
        data = json.dumps(payload, default=_jsonable).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client is gone; its request was served and released already
            self.close_connection = True


class _BadField(GfedgeError):
    pass


def _field(body: dict, name: str):
    if name not in body:
        raise _BadField(f"the request body lacks '{name}'", "see the endpoint list in `gfedge serve --help`")
    return body[name]


def _pick(body: dict, *names: str) -> dict:
    return {n: body[n] for n in names if body.get(n) is not None}


def _infer_args(body: dict) -> dict:
    inputs = _field(body, "inputs")
    if not isinstance(inputs, dict):
        raise _BadField("'inputs' must be an object of input name -> list", 'e.g. {"inputs": {"x": [0.0, 0.5]}}')
    return {"inputs": inputs, **_pick(body, "key", "context", "family", "model", "request_id")}


def _answer_json(answer, *, with_outputs: bool) -> dict:
    outputs = {}
    for name, value in answer.outputs.items():
        outputs[name] = {"shape": list(value.shape), "dtype": str(value.dtype)}
        if with_outputs:
            outputs[name]["data"] = value.tolist()
    return {
        "request_id": answer.request_id, "model": answer.model, "context": answer.context, "hit": answer.hit,
        "swapped": answer.swapped, "latency_ms": answer.seconds * 1e3, "fallback_from": answer.fallback_from,
        "decoded": answer.decoded, "outputs": outputs,
    }


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def serve(zoo, *, port: int, rescan_s: float = 2.0, on_ready=None) -> None:
    """Serve until interrupted (SIGINT / SIGTERM); rescans the zoo folder every `rescan_s` seconds."""
    server = ZooServer(zoo, port=port)
    stop = threading.Event()

    def rescan() -> None:
        while not stop.wait(rescan_s):
            try:
                zoo.scan()
            except Exception:  # a scan must never take the service down
                traceback.print_exc(file=sys.stderr)

    if rescan_s > 0:
        threading.Thread(target=rescan, name="gfedge-rescan", daemon=True).start()
    _stop_on_sigterm(server)
    if on_ready is not None:
        on_ready(server)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
        zoo.close()


def _stop_on_sigterm(server: ZooServer) -> None:
    import signal

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
