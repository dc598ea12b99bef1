"""The floor of a Python HTTP stack on this machine: bare FastAPI + ONNX Runtime.

    FLOOR_MODEL=model.onnx uvicorn benchmarks.floor_app:app --workers 2 --no-access-log

POST /predict with `{"features": [...]}` (one row, in the model's feature order) returns
`{"fraud_score": p}`. No features are computed, no key is checked and nothing is logged:
`benchmarks/serving_bench.py` uses it to show how much of the scoring service's latency is
the HTTP stack itself.
"""

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel


def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class Row(BaseModel):
    features: list[float]


class Score(BaseModel):
    fraud_score: float


app = FastAPI()
_SESSION = _session(os.environ["FLOOR_MODEL"])
_INPUT = _SESSION.get_inputs()[0].name
_OUTPUT = _SESSION.get_outputs()[-1].name


@app.post("/predict")
def predict(row: Row) -> Score:
    x = np.asarray([row.features], dtype=np.float32)
    probabilities = _SESSION.run([_OUTPUT], {_INPUT: x})[0]
    return Score(fraud_score=float(np.asarray(probabilities).reshape(1, -1)[0, -1]))
