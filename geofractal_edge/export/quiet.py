"""Silence the exporter's and quantizers' chatter (torchvision notices, pre-processing hints).

Their messages are about models and setups we do not have; real errors still raise.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

# Loggers whose level is given back after the block: an import inside it may set one for good (onnxruntime's
# matmul_nbits_quantizer calls logging.basicConfig(level=INFO), which sets the root logger to INFO).
_LOGGERS = ("torch.onnx", "torch._dynamo", "torch.export", "root", "onnxruntime.quantization", "onnxscript")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside: no log record below ERROR from any logger (logging.disable holds whatever levels the block sets), no
    warning. After: the disable threshold and the `_LOGGERS` levels as they were."""
    saved = {name: logging.getLogger(None if name == "root" else name).level for name in _LOGGERS}
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
