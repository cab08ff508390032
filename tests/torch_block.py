"""A preamble for `python -c` scripts that makes importing torch fail, as on a device without it.

Shared by the device-side tests and the benchmarks that measure the device side in fresh processes.
"""

import textwrap

BLOCK_TORCH = textwrap.dedent(
    """
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked: this is the device side")
    sys.meta_path.insert(0, Block())
    """
)
