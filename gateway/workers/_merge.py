"""
``/metrics`` of several processes as one: a merge at scrape.

The supervisor asks each worker for its registry's text and adds the
samples up by name and label set. Counters, histograms and gauges such as
requests in flight are sums over the workers; a ``*_created`` timestamp is
the earliest. prometheus-client's multiprocess mode was not an option: the
per-request metrics are plain integers turned into samples at scrape
(:class:`gateway.observability.RequestStats`), which its mmap files do not
see.

A merged counter must never go down, or Prometheus reads a reset and
counts the whole value again. Two things would make it go down: a worker
that misses a scrape (its samples missing from the sum) and a worker that
dies (its successor counts from 0). The supervisor therefore uses a
worker's last answer when it does not answer in time, and when a worker
dies folds its last cumulative samples (:func:`cumulative`: counters,
histograms, summaries; not gauges) into an offset for its slot that is
added to every later scrape (:func:`fold`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["cumulative", "fold", "merge_expositions"]

#: Family types whose samples only grow while a process lives (a gauge,
#: an info or an untyped family may go down: a dead worker's drop out).
_CUMULATIVE = frozenset({"counter", "histogram", "summary"})

_Key = tuple[str, tuple[tuple[str, str], ...]]


class _Merged:
    """Metric families accumulated over several expositions, in first-seen order."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}
        self._values: dict[str, dict[_Key, float]] = {}

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            known = self._families.get(family.name)
            if known is None:
                known = Metric(family.name, family.documentation, family.type, family.unit)
                self._families[family.name] = known
                self._values[family.name] = {}
            values = self._values[family.name]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = values.get(key)
                if old is None:
                    values[key] = sample.value
                elif sample.name.endswith("_created"):
                    values[key] = min(old, sample.value)
                else:
                    values[key] = old + sample.value

    def collect(self) -> Iterator[Metric]:
        for name, family in self._families.items():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for (sample_name, labels), value in self._values[name].items():
                out.add_sample(sample_name, dict(labels), value)
            yield out


def merge_expositions(texts: Iterable[bytes]) -> bytes:
    """
    Several Prometheus text expositions as one, samples with the same name
    and labels added up.
    """
    merged = _Merged()
    for text in texts:
        merged.add(text.decode("utf-8"))
    return generate_latest(merged)  # type: ignore[arg-type]


def cumulative(text: bytes) -> bytes:
    """
    The counter, histogram and summary samples of an exposition (a
    summary's ``quantile`` samples left out: they are not counts), as an
    exposition: what a dead worker leaves to its slot's offset.
    """
    merged = _Merged()
    merged.add(text.decode("utf-8"))
    kept: dict[str, Metric] = {}
    for family in merged.collect():
        if family.type not in _CUMULATIVE:
            continue
        out = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            if "quantile" not in sample.labels:
                out.add_sample(sample.name, sample.labels, sample.value)
        kept[family.name] = out
    return generate_latest(_Families(list(kept.values())))  # type: ignore[arg-type]


def fold(offset: bytes, last: bytes) -> bytes:
    """A slot's offset once its worker, whose last answer was ``last``, died."""
    return cumulative(merge_expositions([offset, last]))


class _Families:
    """Ready-made families, as a collector for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
