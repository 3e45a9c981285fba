"""Wall-clock skew for the clock-skew fault test (see the Dockerfile beside this file).

time.time, time.time_ns and datetime.datetime.now/utcnow return real time plus the seconds in
/tmp/lagpilot-clock-skew (none or unreadable: no skew), so Lease renewTime and every timestamp the
process writes carry the skew. The monotonic clock is left alone. `datetime.datetime` becomes a subclass
that overrides only now/utcnow; its metaclass makes isinstance/issubclass answer as for the real class,
so datetimes made elsewhere (C extensions, arithmetic) still pass every check."""

import datetime
import time

_PATH = "/tmp/lagpilot-clock-skew"
_real_time, _real_time_ns, _mono = time.time, time.time_ns, time.monotonic
_state = {"skew": 0.0, "read_at": float("-inf")}
_Real = datetime.datetime


def _skew() -> float:
    now = _mono()
    if now - _state["read_at"] >= 0.5:
        _state["read_at"] = now
        try:
            with open(_PATH) as f:
                _state["skew"] = float(f.read().strip() or 0)
        except (OSError, ValueError):
            _state["skew"] = 0.0
    return _state["skew"]


class _SameChecks(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, _Real)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, _Real)


class _SkewedDatetime(_Real, metaclass=_SameChecks):
    @classmethod
    def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
        return _Real.fromtimestamp(time.time(), tz)

    @classmethod
    def utcnow(cls):  # type: ignore[no-untyped-def,override]
        return _Real.utcfromtimestamp(time.time())


time.time = lambda: _real_time() + _skew()
time.time_ns = lambda: _real_time_ns() + int(_skew() * 1e9)
datetime.datetime = _SkewedDatetime  # type: ignore[misc]
