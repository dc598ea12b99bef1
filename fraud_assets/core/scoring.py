"""Scoring with an ONNX model: one session setup shared by pipelines and serving."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


def onnx_session(model: bytes, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime session with a fixed, non-spinning thread pool.

    The default pool spins waiting for work, which steals the CPU from everything else in
    the process (SHAP, the web server) and ruins tail latency; one thread is fastest for
    the single-row requests that dominate serving.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


class OnnxScorer:
    """Fraud probabilities from an ONNX model whose input is the float32 feature matrix."""

    def __init__(self, model: bytes, threads: int = 1) -> None:
        self.session = onnx_session(model, threads)
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = next((o for o in outputs if "prob" in o.lower()), outputs[-1])

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        return np.asarray(out[:, 1] if out.ndim == 2 else out, dtype=np.float64)
