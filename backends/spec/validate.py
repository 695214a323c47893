"""The config's validation errors: one ``ValueError`` wording, naming the field, the value and the range."""

from __future__ import annotations

import math
from typing import Any


def fail(owner: str, name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{owner}.{name} = {value!r} is invalid: {allowed}")


def check_int(owner: str, name: str, value: Any, low: int, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        fail(owner, name, value, f"must be an integer in [{low}, {high}]")


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(owner, name, value, f"must be one of {', '.join(choices)}")
