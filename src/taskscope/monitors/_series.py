"""Bounded numeric aggregates: a log-bucketed histogram and a self-compacting series."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

#: Buckets per doubling: percentiles are exact to within 2**(1/4) (19%).
_PER_OCTAVE: Final = 4
#: The first bucket's upper bound; lags below it are counted in bucket 0.
_SMALLEST: Final = 1e-6
#: 1 us .. ~1 hour.
_BUCKETS: Final = _PER_OCTAVE * 32


def bucket_bound(index: int) -> float:
    """Return the upper bound (seconds) of histogram bucket `index`."""
    return float(_SMALLEST * 2.0 ** (index / _PER_OCTAVE))


class Histogram:
    """Counts of durations in logarithmic buckets, plus count, sum and max (O(1) add)."""

    __slots__ = ("count", "counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_BUCKETS + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        """Count one duration (negative values count as zero)."""
        if value <= _SMALLEST:
            index = 0
        else:
            index = min(_BUCKETS, math.ceil(math.log2(value / _SMALLEST) * _PER_OCTAVE))
        self.counts[index] += 1
        self.count += 1
        if value > 0:
            self.total += value
            if value > self.max:
                self.max = value

    def percentile(self, fraction: float) -> float:
        """Return the upper bound of the bucket holding the `fraction` quantile."""
        if self.count == 0:
            return 0.0
        rank = fraction * self.count
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if count and seen >= rank:
                return min(bucket_bound(index), self.max)
        return self.max

    def buckets(self) -> tuple[tuple[float, int], ...]:
        """Return (upper bound, count) for every non-empty bucket."""
        return tuple(
            (bucket_bound(index), count) for index, count in enumerate(list(self.counts)) if count
        )


class Series(Generic[T]):
    """A time series of at most `capacity` points: when full, neighbouring points are
    merged pairwise, so it always covers the whole run at a coarser resolution."""

    __slots__ = ("_merge", "capacity", "points")

    def __init__(self, capacity: int, merge: Callable[[T, T], T]) -> None:
        self.capacity = capacity
        self.points: list[T] = []
        self._merge = merge

    def append(self, point: T) -> None:
        """Add a point, compacting first when the series is full."""
        points = self.points
        if len(points) >= self.capacity:
            merge = self._merge
            compacted = [merge(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]
            if len(points) % 2:
                compacted.append(points[-1])
            self.points = points = compacted
        points.append(point)

    def snapshot(self) -> tuple[T, ...]:
        """Return the points, oldest first."""
        return tuple(self.points)
