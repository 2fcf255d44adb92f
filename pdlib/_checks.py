"""Validation helpers shared by the config sections and the methods' options: one message style,
"name=value is invalid; allowed: ..."."""
from __future__ import annotations

import math

__all__ = ["check", "is_int", "is_num"]


def check(cond: bool, name: str, value, allowed: str) -> None:
    """Raise ValueError naming the parameter, the value and what is allowed, unless cond."""
    if not cond:
        raise ValueError(f"{name}={value!r} is invalid; allowed: {allowed}")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
