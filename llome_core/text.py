"""The prompt/answer text format (``shared/spec/algorithm.md`` §3.2) and its strict parser.

Two formats, chosen by ``ModelConfig.text_format``:

- ``json`` (the paper's): prompt ``"<inc> [3, 1, 5]\\n"``, answer ``"[3, 1, 5]"``.
- ``compact``: prompt ``"<inc> [3 1 5]\\n"``, answer ``"[3 1 5]"``. The same brackets mark start
  and end (so a generation is cut after its first ``]`` exactly as in json), but no commas: with
  our word-level tokenizer an answer is L + 2 tokens instead of 2L + 1, which halves the cost of
  training and decoding.

Decoded text from a word-level tokenizer is space-joined (``"[ 3 , 1 , 5 ]"``), so the parser
ignores whitespace and reads integers with a regex. A generation is cut after its first ``]``;
whatever follows (EOS, a second list) is ignored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PROMPT_TAG = "<inc>"
OPEN, CLOSE, SEP, NEWLINE = "[", "]", ",", "\n"

FormatKind = Literal["json", "compact"]
FORMAT_KINDS: tuple[str, ...] = ("json", "compact")

_INT = re.compile(r"^[+-]?\d+$")


class ParseError(ValueError):
    """A generation that is not a valid answer; ``reason`` is a short code, the message says why.

    Reasons: ``no_open_bracket``, ``no_close_bracket``, ``not_integer``, ``wrong_length``,
    ``out_of_range``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


PARSE_FAILURE_REASONS: tuple[str, ...] = (
    "no_open_bracket",
    "no_close_bracket",
    "not_integer",
    "wrong_length",
    "out_of_range",
)


@dataclass(frozen=True)
class TextFormat:
    """How a sequence is written into a prompt and an answer, and read back from a generation."""

    kind: FormatKind = "json"

    def __post_init__(self) -> None:
        if self.kind not in FORMAT_KINDS:
            raise ValueError(f"text format {self.kind!r} is not one of {FORMAT_KINDS}")

    @property
    def separator(self) -> str | None:
        """The token between two states (``","`` for json, none for compact)."""
        return SEP if self.kind == "json" else None

    def answer(self, y: Sequence[int]) -> str:
        """The target text for sequence ``y``: ``"[3, 1, 5]"`` (json) or ``"[3 1 5]"`` (compact)."""
        joiner = ", " if self.kind == "json" else " "
        return OPEN + joiner.join(str(int(s)) for s in y) + CLOSE

    def prompt(self, x: Sequence[int]) -> str:
        """The prompt for input ``x``: ``"<inc> "`` + its answer text + newline."""
        return f"{PROMPT_TAG} {self.answer(x)}{NEWLINE}"

    def answer_template(self, dim: int) -> list[str | None]:
        """The answer as a list of tokens, ``None`` where a state goes (for constrained decoding).

        json: ``[ S , S , ... , S ]``; compact: ``[ S S ... S ]``.
        """
        template: list[str | None] = [OPEN]
        for i in range(dim):
            if i and self.kind == "json":
                template.append(SEP)
            template.append(None)
        template.append(CLOSE)
        return template

    def answer_length(self, dim: int) -> int:
        """Number of tokens of an answer with our word-level tokenizer (brackets included)."""
        return dim + 2 + (dim - 1 if self.kind == "json" else 0)

    def parse(self, text: str, num_states: int, dim: int) -> list[int]:
        """The states of a generated answer; raises :class:`ParseError` saying what is wrong.

        Leading whitespace is allowed, anything else before ``[`` is not; the text is cut after
        its first ``]``.
        """
        body = text.lstrip()
        if not body.startswith(OPEN):
            raise ParseError(
                "no_open_bracket", f"expected the answer to start with '[', got {_snippet(body)!r}"
            )
        end = body.find(CLOSE)
        if end < 0:
            raise ParseError("no_close_bracket", f"no ']' in {_snippet(body)!r}")
        inner = body[1:end]
        if self.kind == "json":
            items = [] if not inner.strip() else [p.strip() for p in inner.split(SEP)]
        else:
            items = inner.split()
        bad = [p for p in items if not _INT.match(p)]
        if bad:
            raise ParseError(
                "not_integer", f"items {bad[:3]!r} are not integers (format {self.kind!r})"
            )
        states = [int(p) for p in items]
        if len(states) != dim:
            raise ParseError("wrong_length", f"expected {dim} states, got {len(states)}")
        out = [s for s in states if not 0 <= s < num_states]
        if out:
            raise ParseError("out_of_range", f"states {out[:3]} are outside [0, {num_states})")
        return states

    def try_parse(self, text: str, num_states: int, dim: int) -> list[int] | ParseError:
        """Like :meth:`parse`, but returns the error instead of raising it (for counting)."""
        try:
            return self.parse(text, num_states, dim)
        except ParseError as e:
            return e


def _snippet(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n] + "..."
