"""The prompt/answer format and its strict parser (spec §3.2)."""

from __future__ import annotations

import pytest

from llome_core.modeling import build_tokenizer
from llome_core.text import ParseError, TextFormat

V, L = 8, 5


@pytest.mark.parametrize("kind", ["json", "compact"])
def test_answer_parses_back_to_the_sequence(kind):
    fmt = TextFormat(kind)
    y = [3, 1, 7, 0, 5]
    assert fmt.parse(fmt.answer(y), V, L) == y


def test_json_format_is_the_papers():
    fmt = TextFormat("json")
    assert fmt.prompt([3, 1, 5]) == "<inc> [3, 1, 5]\n"
    assert fmt.answer([3, 1, 5]) == "[3, 1, 5]"


def test_compact_format_has_brackets_and_no_commas():
    fmt = TextFormat("compact")
    assert fmt.prompt([3, 1, 5]) == "<inc> [3 1 5]\n"
    assert fmt.answer([3, 1, 5]) == "[3 1 5]"


@pytest.mark.parametrize("kind", ["json", "compact"])
def test_parser_reads_space_joined_decoded_text(kind):
    fmt = TextFormat(kind)
    tok = build_tokenizer(V)
    y = [3, 1, 7, 0, 5]
    decoded = tok.decode(tok(fmt.answer(y))["input_ids"])
    assert decoded != fmt.answer(y)  # the word-level decoder joins tokens with spaces
    assert fmt.parse(decoded, V, L) == y


@pytest.mark.parametrize("kind", ["json", "compact"])
def test_parser_cuts_after_the_first_closing_bracket(kind):
    fmt = TextFormat(kind)
    y = [1, 2, 3, 4, 5]
    assert fmt.parse(fmt.answer(y) + " <eos> [9, 9 junk", V, L) == y


@pytest.mark.parametrize(
    "kind,text,reason",
    [
        ("json", "[1, 2, 3, 4, 5", "no_close_bracket"),
        ("json", "1, 2, 3, 4, 5]", "no_open_bracket"),
        ("json", "[1, 2, x, 4, 5]", "not_integer"),
        ("json", "[1 2, 3, 4, 5]", "not_integer"),  # a missing comma is not two integers
        ("json", "[1, 2, 3, 4]", "wrong_length"),
        ("json", "[]", "wrong_length"),
        ("json", "[1, 2, 3, 4, 8]", "out_of_range"),
        ("json", "[1, 2, -1, 4, 5]", "out_of_range"),
        ("compact", "[1 2 3 4 5", "no_close_bracket"),
        ("compact", "[1, 2, 3, 4, 5]", "not_integer"),
        ("compact", "[1 2 3 4 5 6]", "wrong_length"),
        ("compact", "[1 2 3 4 9]", "out_of_range"),
        ("compact", "<unk> [1 2 3 4 5]", "no_open_bracket"),
    ],
)
def test_parser_rejects_with_the_right_reason(kind, text, reason):
    with pytest.raises(ParseError) as err:
        TextFormat(kind).parse(text, V, L)
    assert err.value.reason == reason
    assert isinstance(err.value, ValueError)


def test_wrong_length_says_expected_and_got():
    with pytest.raises(ParseError, match="expected 5 states, got 3"):
        TextFormat("json").parse("[1, 2, 3]", V, L)


@pytest.mark.parametrize("kind", ["json", "compact"])
def test_answer_template_matches_the_answer_tokens(kind):
    fmt = TextFormat(kind)
    tok = build_tokenizer(V)
    y = [3, 1, 7, 0, 5]
    tokens = tok.convert_ids_to_tokens(tok(fmt.answer(y))["input_ids"])
    template = fmt.answer_template(L)
    assert len(tokens) == len(template) == fmt.answer_length(L)
    states = iter(y)
    assert tokens == [t if t is not None else str(next(states)) for t in template]


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        TextFormat("xml")  # type: ignore[arg-type]
