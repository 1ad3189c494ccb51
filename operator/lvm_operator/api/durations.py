"""Go-style duration strings (``168h``, ``30s``, ``1h30m``, ``1.5h``, ``250ms``).

The CR stores durations as strings, the way Kubernetes users write them (Argo Rollouts and
Flagger do the same), and the apiserver checks them with :data:`DURATION_PATTERN`, so an
unparsable duration never reaches the operator. The grammar is Go's ``time.ParseDuration`` minus
its rarely used corners: no sign, a unit on every number, and no ``µs``; it is a strict subset of
what Go and CEL's ``duration()`` accept.
"""

from __future__ import annotations

import re
from datetime import timedelta

#: Anchored RE2/Python pattern for a duration string (the CRD's ``pattern``). At most six
#: digits before the point and nine after: ``9999999999999999999h`` parsed at admission but
#: overflowed in the operator, so every tick failed; 999999h (114 years) is plenty.
DURATION_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,9})?(ns|us|ms|s|m|h))+$"
#: Longest duration string accepted (keeps CEL's cost estimate small).
DURATION_MAX_LENGTH = 32

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_WHOLE = re.compile(DURATION_PATTERN)


def is_duration(text: str) -> bool:
    """Whether ``text`` is a duration string this API accepts."""
    return len(text) <= DURATION_MAX_LENGTH and _WHOLE.fullmatch(text) is not None


def is_positive_duration(text: str) -> bool:
    """Whether a valid duration string is above zero: some digit in it is not 0.

    This is the Python twin of the CEL rule ``self.matches('[1-9]')`` the CRD uses for the same
    purpose (a valid duration is zero exactly when all its digits are zeros).
    """
    return re.search(r"[1-9]", text) is not None


def parse_duration(text: str) -> timedelta:
    """Parse a duration string into a :class:`~datetime.timedelta`.

    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    >>> parse_duration("1.5s").total_seconds()
    1.5
    """
    if not isinstance(text, str) or not is_duration(text):
        raise ValueError(
            f"invalid duration {text!r}: expected a number with a unit (ns, us, ms, s, m, h), "
            "repeated, e.g. 30s, 168h, 1h30m"
        )
    seconds = sum(float(number) * _SECONDS[unit] for number, unit in _PART.findall(text))
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def duration_seconds(text: str) -> float:
    """Parse a duration string into seconds."""
    return parse_duration(text).total_seconds()


def format_duration(delta: timedelta | float) -> str:
    """Format seconds (or a timedelta) as the shortest ``XhYmZs`` string, e.g. ``1h30m``."""
    total = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if total < 0:
        raise ValueError("durations in this API are never negative")
    whole = int(total)
    millis = round((total - whole) * 1000)
    if millis == 1000:
        whole, millis = whole + 1, 0
    hours, rest = divmod(whole, 3600)
    minutes, seconds = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds or (not out and not millis):
        out += f"{seconds}s"
    if millis:
        out += f"{millis}ms"
    return out
