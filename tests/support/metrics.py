"""A daemon's /metrics as the tests read it: Prometheus' own text parser, samples by name and labels."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` from the /metrics of the status endpoint on ``port``."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float | None:
    """The sample with exactly these labels; None when there is none."""
    return samples.get((name, tuple(sorted(labels.items()))))
