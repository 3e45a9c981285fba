"""How hard a worker may push its target: an adaptive concurrency limit (AIMD, as TCP and Netflix's
concurrency-limits do) and an optional request-rate cap. Pure: the caller passes the time."""

from __future__ import annotations


class ConcurrencyLimit:
    """Requests allowed on the wire at once. Starts at ``maximum`` (``--threads``); every success adds
    ``1/limit`` (one more slot per window of successes), every sign of overload (no answer, 429, 502, 503,
    504) halves it, at most once per ``cooldown`` seconds, so one burst of failed requests that were all on
    the wire together counts as one signal, not as ``limit`` of them. Never below ``minimum``: one request
    keeps probing the target."""

    __slots__ = ("_last_cut", "cooldown", "maximum", "minimum", "value")

    def __init__(self, maximum: int, minimum: int = 1, cooldown: float = 0.1) -> None:
        if maximum < 1 or not 1 <= minimum <= maximum:
            raise ValueError(f"need 1 <= minimum <= maximum, got {minimum}, {maximum}")
        self.maximum = maximum
        self.minimum = minimum
        self.cooldown = cooldown
        self.value = float(maximum)
        self._last_cut = float("-inf")

    def allowed(self) -> int:
        return int(self.value)

    def on_success(self) -> None:
        if self.value < self.maximum:
            self.value = min(float(self.maximum), self.value + 1.0 / self.value)

    def on_overload(self, now: float) -> bool:
        """Returns whether the limit was cut."""
        if now - self._last_cut < self.cooldown:
            return False
        self._last_cut = now
        cut = max(float(self.minimum), self.value / 2.0)
        changed = int(cut) != int(self.value)
        self.value = cut
        return changed


class RateLimit:
    """A token bucket: ``rate`` requests per second on average, bursts up to ``burst``. ``reserve``
    takes one token and says how long to wait before using it (0: now), so callers queue fairly by the
    order they asked in. ``rate`` <= 0 means no limit."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._tokens = self.burst
        self._at: float | None = None

    def reserve(self, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        if self._at is None:
            self._at = now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
