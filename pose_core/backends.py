"""Backend-neutral network runners: a float32 NCHW batch in, numpy arrays out.

Every runner is called as `runner(batch)` and returns a tuple of numpy arrays in
the network's output order, so pipelines never care which backend runs.
"""
import os

import numpy as np

from .errors import WeightsError

BACKENDS = ("onnx", "torch")


def default_threads():
    return max(1, os.cpu_count() or 1)


class OnnxRunner:
    """ONNX Runtime session on the CPU."""

    name = "onnx"

    def __init__(self, path, threads=None):
        import onnxruntime as ort

        path = str(path)
        if not os.path.isfile(path):
            raise WeightsError(f"weights file not found: {path}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # Idle worker threads must not spin after a run: they steal the two cores from the
        # decode and encode threads and, in a top-down frame, from the other session
        # (detector, pose network). Measured: 14.6 -> 18.5 fps bottom-up, 5.2 -> 8.3 top-down.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsError(f"cannot load ONNX weights {path}: {first_line[:200]}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch):
        return tuple(self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(batch, np.float32)}))


class TorchRunner:
    """A PyTorch module in eval mode; its forward returns a tensor or a tuple of tensors."""

    name = "torch"

    def __init__(self, module, threads=None):
        import torch

        torch.set_flush_denormal(True)  # denormals slow CPU convolutions down about 10x
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.module = module.eval()

    def __call__(self, batch):
        with self.torch.inference_mode():
            out = self.module(self.torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        if not isinstance(out, (tuple, list)):
            out = (out,)
        return tuple(o.float().numpy() for o in out)
