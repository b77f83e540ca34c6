"""
``/metrics`` of several processes as one: a merge at scrape.

The supervisor asks each worker for its registry's text and adds the
samples up by name and label set. Counters, histograms and gauges such as
requests in flight are sums over the workers; a ``*_created`` timestamp is
the earliest. prometheus-client's multiprocess mode was not an option: the
per-request metrics are plain integers turned into samples at scrape
(:class:`gateway.observability.RequestStats`), which its mmap files do not
see.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["merge_expositions"]

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
