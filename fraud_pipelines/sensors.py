"""Sensors: reactions to events rather than to the clock."""

from __future__ import annotations

ALL: list = []
