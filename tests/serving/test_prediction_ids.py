"""Prediction ids are version-7 UUIDs: unique, and ordered by the time they were made."""

from __future__ import annotations

import time
import uuid

from serving.engine import new_prediction_ids


def test_prediction_ids_are_unique_time_ordered_uuid7() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_prediction_ids(50_000)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for value in ids[:1000]:
        assert value.version == 7 and value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after
        assert uuid.UUID(str(value)) == value
    time.sleep(0.002)
    later = new_prediction_ids(1)[0]
    assert all(later > value for value in ids), "a later id sorts after every earlier one"
