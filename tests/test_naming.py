"""Naming rules, without Orthanc."""

from __future__ import annotations

import pytest

from orthancfs.tree.naming import MAX_NAME_BYTES, NameAssigner, Wanted, cap_utf8, clean_text, join_fields, numbered
from orthancfs.tree.views import last_update_ns, study_year_month


@pytest.mark.parametrize(("raw", "clean"), [
    ("Müller^Jürgen", "Müller^Jürgen"),
    ("李^小龍", "李^小龍"),
    ("a/b", "a_b"),
    ("a\\b", "a_b"),
    ("nul\x00here", "nul_here"),
    ("tab\tand\nnewline\x7f", "tab_and_newline_"),
    ("  padded  ", "padded"),
    ("keep <>:\"|?* for FUSE", "keep <>:\"|?* for FUSE"),
    ("c1\x85\x9fcontrols", "c1__controls"),
    ("Evil\u202emcd.exe", "Evil_mcd.exe"),  # RIGHT-TO-LEFT OVERRIDE: would show as "Evilexe.dcm"
    ("\u200f\u200e\u061c", "___"),  # bidi marks: a name that looks empty
    ("a\u2066b\u2069c", "a_b_c"),  # bidi isolates
    ("zero\u200bwidth\u200d\ufeff", "zero_width__"),
    ("soft\xadhyphen", "soft_hyphen"),
    ("line\u2028para\u2029", "line_para_"),
    ("lone\ud800surrogate", "lone_surrogate"),  # cannot be encoded as a file name at all
    ("flag\U000e0067tag", "flag_tag"),
    ("שלום مرحبا", "שלום مرحبا"),  # right-to-left letters are letters
])
def test_clean_text_replaces_only_what_cannot_be_in_a_name(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_replacement_keeps_distinct_values_distinct() -> None:
    assert clean_text("A/B") != clean_text("AB")
    assert clean_text("A\u202eB") != clean_text("AB")


def test_every_format_character_is_replaced() -> None:
    """The whole of category Cf, whatever Python's Unicode version holds."""
    import unicodedata

    format_characters = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    assert len(format_characters) > 150
    assert all(clean_text(f"a{c}b") == "a_b" for c in format_characters)


@pytest.mark.parametrize(("fields", "name"), [
    ([".hidden", "Doe^John"], "_hidden - Doe^John"),
    (["..x"], "_.x"),
    ([".", "x"], "_ - x"),
    (["", ".profile"], "_profile"),
    (["a.b", ".c"], "a.b - .c"),  # only a leading dot hides
])
def test_a_leading_dot_is_replaced_so_nothing_is_hidden(fields: list[str], name: str) -> None:
    assert join_fields(fields, "1234-abcd") == name


def test_replaced_names_stay_unique_and_stable() -> None:
    wanted = [Wanted("a", join_fields([".x"], "a")), Wanted("b", join_fields(["_x"], "b")),
              Wanted("c", join_fields(["\u202ex"], "c"))]
    assigner = NameAssigner()
    names = assigner.assign(wanted)
    assert names == {"a": "_x", "b": "_x (1)", "c": "_x (2)"}
    assert assigner.assign(list(reversed(wanted))) == names


def test_join_fields_drops_empty_fields_and_their_separators() -> None:
    assert join_fields(["P1", "Doe^John"], "id") == "P1 - Doe^John"
    assert join_fields(["P1", ""], "id") == "P1"
    assert join_fields(["", None, "Desc"], "id") == "Desc"


@pytest.mark.parametrize("fields", [[], ["", "  "], ["."], [".."], ["", ".."]])
def test_a_name_is_never_empty_nor_dot(fields: list[str]) -> None:
    assert join_fields(fields, "1234-abcd") == "1234-abcd"


def test_cap_utf8_cuts_on_a_character_boundary() -> None:
    text = "語" * 100  # 3 bytes each
    capped = cap_utf8(text, 255)
    assert len(capped.encode()) == 255 and capped == "語" * 85
    assert cap_utf8("a" + "é" * 200, 100).encode().decode() == "a" + "é" * 49  # 1 + 98 bytes, not 100
    assert cap_utf8("short", 255) == "short"


def test_numbered_names_fit_in_name_max_with_suffix_and_extension() -> None:
    name = numbered("x" * 400, 12, ".dcm")
    assert len(name.encode()) == MAX_NAME_BYTES and name.endswith(" (12).dcm")
    assert numbered("stem", 0, ".dcm") == "stem.dcm"


def test_duplicates_are_numbered_in_resource_id_order() -> None:
    names = NameAssigner().assign([Wanted("b", "Same"), Wanted("a", "Same"), Wanted("c", "Same"), Wanted("d", "Other")])
    assert names == {"a": "Same", "b": "Same (1)", "c": "Same (2)", "d": "Other"}


def test_a_name_never_changes_because_another_resource_appears() -> None:
    assigner = NameAssigner()
    before = assigner.assign([Wanted("m", "Same"), Wanted("z", "Same")])
    after = assigner.assign([Wanted("m", "Same"), Wanted("z", "Same"), Wanted("a", "Same")])  # sorts first
    assert after["m"] == before["m"] and after["z"] == before["z"]
    assert after["a"] == "Same (2)"


def test_names_of_removed_resources_are_freed() -> None:
    assigner = NameAssigner()
    assigner.assign([Wanted("a", "Same"), Wanted("b", "Same")])
    assert assigner.assign([Wanted("b", "Same")]) == {"b": "Same (1)"}  # b keeps its name...
    assert assigner.assign([Wanted("b", "Same"), Wanted("c", "Same")])["c"] == "Same"  # ...and the free one is reused


def test_a_resource_whose_own_tags_change_is_renamed() -> None:
    assigner = NameAssigner()
    assigner.assign([Wanted("a", "Old")])
    assert assigner.assign([Wanted("a", "New")]) == {"a": "New"}


def test_generated_suffix_never_collides_with_a_literal_name() -> None:
    names = NameAssigner().assign([Wanted("a", "X"), Wanted("b", "X"), Wanted("c", "X (1)")])
    assert len(set(names.values())) == 3


def test_suffix_goes_before_the_extension() -> None:
    names = NameAssigner().assign([Wanted("a", "1.2.3", ".dcm"), Wanted("b", "1.2.3", ".dcm")])
    assert names == {"a": "1.2.3.dcm", "b": "1.2.3 (1).dcm"}


@pytest.mark.parametrize(("date", "expected"), [
    ("20200517", ("2020", "2020-05")),
    (" 19991231 ", ("1999", "1999-12")),
    ("20240229", ("2024", "2024-02")),
    ("20230229", None),
    ("20201340", None),
    ("2020", None),
    ("", None),
    ("2020-05-17", None),
    ("00000101", None),
])
def test_study_dates(date: str, expected: tuple[str, str] | None) -> None:
    assert study_year_month(date) == expected


def test_last_update_is_utc() -> None:
    assert last_update_ns({"LastUpdate": "19700101T000001"}) == 1_000_000_000
    assert last_update_ns({"LastUpdate": "garbage"}) == 0
    assert last_update_ns({}) == 0
