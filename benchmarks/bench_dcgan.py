"""asv benchmarks of the DCGAN generator example (``examples/dcgan_generator.py``): a batch-64 forward of the
whole network from ``ConvTranspose`` operators (batch norm folded, ReLU/tanh fused), in both layouts, and of a
DCGAN block with and without its fused ReLU (the epilogue's cost)."""

import importlib.util
from pathlib import Path

import numpy as np

import fastdeconv as fd

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dcgan_generator.py"


def _example():
    spec = importlib.util.spec_from_file_location("dcgan_generator", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TimeGenerator:
    params = (["channels_first", "channels_last"],)
    param_names = ["data_format"]
    timeout = 300

    def setup(self, data_format):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise NotImplementedError("the example builds its weights with torch") from None
        module = _example()
        self.generate = module.generate
        self.ops = module.fastdeconv_generator(module.torch_generator(0), data_format)
        z = np.random.default_rng(0).standard_normal((64, module.LATENT, 1, 1)).astype(np.float32)
        self.z = np.ascontiguousarray(np.moveaxis(z, 1, -1)) if data_format == "channels_last" else z
        self.generate(self.ops, self.z)

    def time_forward_batch64(self, data_format):
        self.generate(self.ops, self.z)


class TimeEpilogue:
    params = ([None, "relu"],)
    param_names = ["activation"]

    def setup(self, activation):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((64, 128, 16, 16)).astype(np.float32)
        w = rng.standard_normal((128, 64, 4, 4)).astype(np.float32)
        self.op = fd.ConvTranspose(w, rng.standard_normal(64).astype(np.float32), stride=2, padding=1,
                                   activation=activation)
        self.op(self.x)

    def time_dcgan_block(self, activation):
        self.op(self.x)
