"""Build TensorRT engines on the device from a bundle's ONNX.

`compat` is pure Python (the runtime checks engine keys with it, without TensorRT); `adapter`
imports TensorRT lazily and hides the 10 vs 11 differences; `build` writes engine.plan into the
bundle. Nothing here imports TensorRT, CUDA or torch at import time.
"""
