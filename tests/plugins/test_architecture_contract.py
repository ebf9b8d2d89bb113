"""One contract test over every registered architecture (timm's ``test_models.py`` pattern).

Each architecture is built for 3 and 10 classes and runs a forward and a
backward pass on a batch of 2 (``modelyard.testing.check_architecture``).
CI runs every non-torchvision architecture plus a representative torchvision
subset (one or two per family, ``CI_SUBSET``); the remaining torchvision
models carry the ``slow_models`` marker and run with ``MODELYARD_ALL_MODELS=1``.
Only classifiers are checked here (the contract is logits of ``(batch,
num_classes)``); detectors answer with boxes and have their own contract tests
beside their plugin's (e.g. ``test_torchvision_detectors.py``).
"""

from __future__ import annotations

import os
import re

import pytest

from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins.torchvision_models import FIXED_SIZE_ARGUMENT, min_input_size
from modelyard.testing import check_architecture

CI_SUBSET = frozenset(
    {
        "resnet18",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "squeezenet1_0",
        "shufflenet_v2_x0_5",
        "densenet121",
        "vit_b_16",
        "convnext_tiny",
        "regnet_y_400mf",
        "googlenet",
        "inception_v3",
    }
)
ALL_MODELS = os.environ.get("MODELYARD_ALL_MODELS") == "1"

HOST = PluginHost(disabled=set()).load_all()


def contract_input_size(name: str, owner: str) -> tuple[int, int] | None:
    """The smallest input that exercises the whole network: keeps the test fast."""
    if owner != "torchvision_models":
        return None  # the architecture's own default_input_size
    if name.startswith("vit_"):
        patch = int(re.search(r"_(\d+)$", name).group(1))  # type: ignore[union-attr]
        return (2 * patch, 2 * patch)  # ViT takes any multiple of its patch size when not pretrained
    if name.split("_")[0] in FIXED_SIZE_ARGUMENT or name.startswith("swin"):
        return min_input_size(name)  # maxvit and swin: their window partitions need the full size
    h, w = min_input_size(name)
    return (max(32, h), max(32, w))


def _params() -> list[object]:
    params = []
    for name in HOST.architectures.names():
        if "classification" not in HOST.architectures.get(name).tasks:
            continue
        owner = HOST.architectures.owner(name)
        marks = []
        if owner == "torchvision_models" and name not in CI_SUBSET:
            marks = [
                pytest.mark.slow_models,
                pytest.mark.skipif(not ALL_MODELS, reason="outside the CI subset; set MODELYARD_ALL_MODELS=1"),
            ]
        params.append(pytest.param(name, owner, id=name, marks=marks))
    return params


def test_ci_subset_names_registered_models() -> None:
    assert CI_SUBSET <= set(HOST.architectures.names())


@pytest.mark.parametrize(("name", "owner"), _params())
def test_architecture_builds_for_3_and_10_classes_and_trains_one_step(name: str, owner: str) -> None:
    check_architecture(HOST.architectures.get(name), num_classes=(3, 10), input_size=contract_input_size(name, owner), batch=2)
