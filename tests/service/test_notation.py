"""The notation module: one ``mutations`` for the API, the worker and the dashboard (there were
two, which disagreed on a missing parent and on sequences of different lengths)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from api.notation import apply_mutations, mutations, parse_ttl, same_mutations


def test_mutations_say_none_when_the_notation_cannot_express_the_change() -> None:
    assert mutations("AKCD", "DRCD") == "A1D:K2R"
    assert mutations("AKCD", "AKCD") == ""  # equal: no mutation, which is not "unknown"
    assert mutations(None, "AKCD") is None and mutations("AKCD", None) is None
    assert mutations("AKC", "AKCD") is None  # lengths differ: not a list of substitutions
    assert mutations("", "") == ""


def test_apply_mutations_inverts_mutations_and_refuses_a_wrong_parent() -> None:
    parent, child = "MKTAYIAK", "NEVAYQAR"
    assert apply_mutations(parent, mutations(parent, child) or "") == child
    assert apply_mutations(parent, "") == parent
    with pytest.raises(ValueError, match="position 1 of the parent is 'M', not 'A'"):
        apply_mutations(parent, "A1D")
    with pytest.raises(ValueError, match="outside the parent"):
        apply_mutations(parent, "M9D")
    with pytest.raises(ValueError, match="is not a mutation"):
        apply_mutations(parent, "M1")


def test_mutation_lists_compare_in_any_order() -> None:
    assert same_mutations("A1D:K2R", "K2R:A1D") and same_mutations("", " ")
    assert not same_mutations("A1D", "A1E")


def test_label_lifetimes_parse_or_say_what_is_expected() -> None:
    assert parse_ttl("14d") == timedelta(days=14) and parse_ttl(" 1.5h ") == timedelta(minutes=90)
    for bad in ("", "0d", "14", "2 weeks", "-1d"):
        with pytest.raises(ValueError, match="positive duration"):
            parse_ttl(bad)
