"""``build_services`` wires one application: the services that read a dataset share one store (one index per version)."""

from __future__ import annotations

from modelyard.core.services import Services


def test_every_dataset_reader_shares_the_one_dataset_store(services: Services) -> None:
    store = services.datasets.store
    readers = (services.splits, services.projects, services.experiments, services.runs, services.evaluations)
    assert all(reader.store is store for reader in readers)  # type: ignore[attr-defined]
