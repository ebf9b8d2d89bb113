"""Flat, unique, safe names for dataset/images/."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from modelyard.core.datasets.naming import flat_name, is_safe_name, unique_name


def test_folders_are_flattened_into_the_name() -> None:
    assert flat_name("cat/0001.jpg", "jpeg") == "cat_0001.jpg"


def test_extension_is_replaced_when_it_does_not_match_the_format() -> None:
    assert flat_name("cat/x.png", "jpeg") == "cat_x.jpg"
    assert flat_name("cat/x.TIF", "tiff") == "cat_x.tif"


def test_unsafe_characters_and_leading_dots_are_replaced() -> None:
    assert flat_name("../.hidden/a b?c.png", "png") == "hidden_a_b_c.png"
    assert flat_name("....png", "png") == "image.png"


def test_unique_name_ignores_case() -> None:
    taken: set[str] = set()
    assert [unique_name(n, taken) for n in ("a.png", "A.png", "a.PNG", "a_2.png")] == ["a.png", "A_2.png", "a_3.PNG", "a_2_2.png"]


@given(st.text(max_size=300), st.sampled_from(["jpeg", "png", "bmp", "gif", "webp", "tiff"]))
def test_any_source_path_gives_a_safe_name(source_path: str, fmt: str) -> None:
    name = flat_name(source_path, fmt)
    assert is_safe_name(name), name
    assert len(name.encode("utf-8")) < 255


def test_unsafe_names_are_recognised() -> None:
    for name in ("", ".", "..", ".thumbs", "../x.png", "a/b.png", "a\\b.png", "a\x00.png", "x" * 200):
        assert not is_safe_name(name), name


def test_checking_many_names_at_once_agrees_with_one_by_one() -> None:
    from modelyard.core.datasets.naming import all_safe_names

    assert all_safe_names(["a.png", "b_2.jpg"]) and all_safe_names([])
    assert not all_safe_names(["a.png", "ok\n..\nfine"])  # a newline must not split one name into safe lines
    assert not all_safe_names(["a.png", "../x"])
    assert not all_safe_names(["x" * 161])


def test_a_folder_name_the_file_name_already_starts_with_is_not_repeated() -> None:
    assert flat_name("circle/circle_0000.png", "png") == "circle_0000.png"
    assert flat_name("train/cat/cat-7.jpg", "jpeg") == "train_cat-7.jpg"
    assert flat_name("Cat/cat.png", "png") == "cat.png"
    assert flat_name("cat/category.png", "png") == "cat_category.png"  # a longer word is not a repeat
