"""Silence the exporter's and quantizers' chatter (torchvision notices, pre-processing hints).

Their messages are about models and setups we do not have; real errors still raise.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_LOGGERS = ("torch.onnx", "torch._dynamo", "torch.export", "root", "onnxruntime.quantization", "onnxscript")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    saved = {name: logging.getLogger(None if name == "root" else name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(None if name == "root" else name).setLevel(logging.ERROR)
    # and below every logger's level: onnxruntime's matmul_nbits_quantizer calls logging.basicConfig(level=INFO) when
    # first imported, which set the root logger back to INFO inside this block (quantize_dynamic's notices printed)
    disabled = logging.root.manager.disable
    logging.disable(max(disabled, logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)
        for name, level in saved.items():
            logging.getLogger(None if name == "root" else name).setLevel(level)
