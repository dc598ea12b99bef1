"""Run by test_security: import and use the serving path with every unpickler refusing.

Prints one JSON line: the unpickling attempts (expected none) and a score.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from typing import Any

ATTEMPTS: list[str] = []


def _refuse(name: str) -> Any:
    def refused(*args: Any, **kwargs: Any) -> Any:
        ATTEMPTS.append(name)
        raise RuntimeError(f"{name} was called on the serving path")

    return refused


class _RefusingUnpickler(pickle.Unpickler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        ATTEMPTS.append("pickle.Unpickler")
        raise RuntimeError("pickle.Unpickler was used on the serving path")


def install_guards() -> list[str]:
    """Make every known way to unpickle raise (and record the attempt)."""
    import _pickle

    guarded = ["pickle.load", "pickle.loads", "pickle.Unpickler"]
    for module in (pickle, _pickle):
        module.load = _refuse(f"{module.__name__}.load")  # type: ignore[assignment]
        module.loads = _refuse(f"{module.__name__}.loads")  # type: ignore[assignment]
        module.Unpickler = _RefusingUnpickler  # type: ignore[assignment,misc]
    import numpy as np

    original = np.load

    def numpy_load(*args: Any, allow_pickle: bool = False, **kwargs: Any) -> Any:
        if allow_pickle:
            ATTEMPTS.append("numpy.load(allow_pickle=True)")
            raise RuntimeError("numpy.load(allow_pickle=True) was called on the serving path")
        return original(*args, allow_pickle=False, **kwargs)

    np.load = numpy_load
    guarded.append("numpy.load(allow_pickle=True)")
    for name, attributes in (
        ("joblib", ("load",)),
        ("cloudpickle", ("load", "loads")),
        ("dill", ("load", "loads")),
        ("torch", ("load",)),
    ):
        try:
            module = __import__(name)
        except ImportError:
            continue
        for attribute in attributes:
            setattr(module, attribute, _refuse(f"{name}.{attribute}"))
            guarded.append(f"{name}.{attribute}")
    return guarded


def main() -> None:
    guarded = install_guards()
    payment = json.loads(sys.argv[1])
    import serving.service  # noqa: F401  (the import graph of the service itself)
    from serving.config import ServingSettings
    from serving.engine import ScoringEngine
    from serving.schemas import Transaction

    engine = ScoringEngine(ServingSettings.from_env())
    deadline = time.monotonic() + 120
    while engine.champion.current is None and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        scored = engine.predict(Transaction(**payment), "probe")
        explained = engine.explain(Transaction(**{**payment, "transaction_id": "probe-2"}))
    finally:
        engine.close()
    report = {
        "attempts": ATTEMPTS,
        "guarded": guarded,
        "score": scored.fraud_score,
        "explained": len(explained.contributions),
        "model_version": scored.model_version,
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
