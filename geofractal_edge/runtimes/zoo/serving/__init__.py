"""`gfedge serve`: the zoo over HTTP, speaking the Open Inference Protocol (KServe v2), on starlette + uvicorn.

options.py    ServeOptions: address, token, limits (safe by default: 127.0.0.1, a token elsewhere)
guard.py      what every request passes first: draining, Host, Origin, token, content type, body size
routes.py     OIP: health, server and model metadata, readiness, infer; /metrics
extensions.py the model repository (load, unload, index) and /v2/gfedge/* (status, keys, feedback, ...)
inference.py  one inference: parse within limits, check against the manifest, decode, run, encode
protocol.py   the inference request's structure, checked into dataclasses
tensors.py    tensors between the wire (JSON or binary) and numpy, checked before they are built
body.py       reading and parsing bodies within limits
prometheus.py Triton's nv_inference_* families and gfedge_* for the zoo
lifecycle.py  the socket, uvicorn, and the drain on SIGTERM/SIGINT
app.py, service.py, replies.py  the application, what handlers share, replies and error statuses

Only `gfedge serve` (through runtimes/zoo/server.py) imports the modules that need starlette,
uvicorn and prometheus_client; `options` imports neither, so `gfedge ps` does not need them.
"""
