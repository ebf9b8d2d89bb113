"""Resource ids: the only gate between a client string and a folder name."""

from __future__ import annotations

import re

import pytest

from modelyard.core.ids import PREFIXES, is_valid_id, new_id


@pytest.mark.parametrize("prefix", PREFIXES)
def test_new_id_is_prefix_dash_eight_lowercase_alphanumerics(prefix: str) -> None:
    value = new_id(prefix)
    assert re.fullmatch(rf"{prefix}-[a-z0-9]{{8}}", value)
    assert is_valid_id(value, prefix)


def test_new_ids_do_not_repeat() -> None:
    ids = {new_id("proj") for _ in range(2000)}
    assert len(ids) == 2000


def test_new_id_refuses_an_unknown_prefix() -> None:
    with pytest.raises(ValueError, match="unknown id prefix"):
        new_id("user")


@pytest.mark.parametrize(
    "value",
    [
        "",
        "proj-",
        "proj-abc",
        "proj-abcdefghi",
        "proj-ABCDEFGH",
        "proj-abcdefg_",
        "proj-abcdef.h",
        "proj-../../etc",
        "../x",
        "proj-abcdefgh/../../x",
        "proj-abcdefgh\n",
        "proj-abcdefgh\x00",
        " proj-abcdefgh",
        "proj-abcdéfgh",
        "proj-" + "a" * 500,
        "exp-abcdefgh",
    ],
)
def test_is_valid_id_refuses_anything_but_the_exact_format(value: str) -> None:
    assert not is_valid_id(value, "proj")


def test_is_valid_id_checks_the_kind() -> None:
    assert is_valid_id("run-0a1b2c3d", "run")
    assert not is_valid_id("run-0a1b2c3d", "exp")
    assert not is_valid_id("export-0a1b2c3d", "exp")
