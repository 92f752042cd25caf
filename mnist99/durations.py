"""Durations as people type them ("90s", "10m", "1h30m") and as the console shows them.

Hand-written because no dependency reads this form alone: pydantic's ``timedelta`` takes ISO 8601
("PT1H30M") and "HH:MM:SS", and pandas' ``Timedelta`` would load pandas into config validation.
"""
from __future__ import annotations

import math
import re

# Hours, minutes, seconds, each optional but in that order, each a number that may have decimals.
_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
EXPECTED = "a duration such as 90s, 10m, 1h30m or 2.5h (h, m, s in that order), or a number of seconds"


def parse_duration(value: str | float) -> float:
    """Seconds in ``value``: "90s", "10m", "1h30m", "2.5h", or a number (of seconds). Raises ValueError saying
    what is expected when ``value`` is none of these; the value must be finite and above zero."""
    if isinstance(value, bool):
        raise ValueError(f"expected {EXPECTED}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        match = _DURATION.fullmatch(text)
        if text and match and any(match.groupdict().values()):
            seconds = sum(float(n) * _SECONDS[unit] for unit, n in match.groupdict().items() if n)
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"expected {EXPECTED}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected {EXPECTED}, above zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The compact form :func:`parse_duration` reads back: 600 -> "10m", 5400 -> "1h30m", 90 -> "1m30s"."""
    total = round(seconds)
    if total < 1:
        return f"{seconds:.1f}s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
