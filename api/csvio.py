"""CSV in and out, with row-numbered, human-readable errors.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first data row is row 2.
Reading never stops at the first problem: every error of the file comes back at once.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from api.errors import InvalidUpload, PayloadTooLarge

TRUE_WORDS = {"true", "t", "yes", "y", "1"}
FALSE_WORDS = {"false", "f", "no", "n", "0"}
# Cells a spreadsheet would run as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
MAX_ERRORS = 100  # enough to fix a file; a 10^6-row mistake does not need 10^6 messages


@dataclass(frozen=True)
class CsvError:
    row: int | None
    column: str | None
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"row": self.row, "column": self.column, "reason": self.reason}


@dataclass
class CsvTable:
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]  # (spreadsheet row number, cells by column)


class UnreadableFile(InvalidUpload):
    """No table can be read from the file at all (empty, binary, an unknown encoding): refused
    at preview, its bytes not kept."""


def raise_if_errors(
    errors: list[CsvError], what: str, error: type[InvalidUpload] = InvalidUpload
) -> None:
    if errors:
        shown = errors[:MAX_ERRORS]
        more = (
            f" (showing the first {MAX_ERRORS} of {len(errors)})"
            if len(errors) > MAX_ERRORS
            else ""
        )
        first = shown[0]
        where = f"row {first.row}" if first.row is not None else "file"
        raise error(
            f"{what}: {len(errors)} problem(s){more}; first: {where}: {first.reason}. "
            "Nothing was stored.",
            errors=[e.as_dict() for e in shown],
        )


DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs"}
DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")


def decode_text(data: bytes, what: str) -> str:
    """The file's text: UTF-8 (BOM or not) or UTF-16 with a BOM (or plainly UTF-16 text)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise_if_errors(
                [
                    CsvError(
                        None,
                        None,
                        f"the file starts as UTF-16 but is not UTF-16 text (byte {exc.start})",
                    )
                ],
                what,
                UnreadableFile,
            )
    # UTF-16 without a BOM: every other byte of ASCII text is zero.
    head = data[:4096]
    for encoding, zeros in (("utf-16-le", head[1::2]), ("utf-16-be", head[0::2])):
        if len(data) % 2 == 0 and zeros and zeros.count(0) > 0.9 * len(zeros):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        binary = head.count(0) > 0
        raise_if_errors(
            [
                CsvError(
                    None,
                    None,
                    (
                        "the file is binary, not a CSV table (a spreadsheet? save it as CSV UTF-8)"
                        if binary
                        else f"the file is not UTF-8 or UTF-16 text (byte {exc.start} is {data[exc.start]:#04x}"
                        "; save it as CSV UTF-8)"
                    ),
                )
            ],
            what,
            UnreadableFile,
        )
    if "\x00" in text[:4096]:
        raise_if_errors(
            [
                CsvError(
                    None,
                    None,
                    "the file is binary, not a CSV table (a spreadsheet? save it as CSV UTF-8)",
                )
            ],
            what,
            UnreadableFile,
        )
    return text


def _delimiter(text: str, allowed: set[str]) -> str:
    """The separator that makes the header a row of known columns (comma when none does)."""
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    best, known = ",", -1
    for delimiter in DELIMITERS:
        cells = next(csv.reader([first], delimiter=delimiter), [])
        hits = sum(c.strip().lower() in allowed for c in cells)
        if hits > known:
            best, known = delimiter, hits
    return best


def read_table(
    data: bytes,
    *,
    allowed: set[str],
    required: list[set[str]],
    max_rows: int,
    what: str,
    numbers: frozenset[str] = frozenset({"score"}),
) -> CsvTable:
    """Parse ``data`` as a table with one header row, as spreadsheets save it: UTF-8 (with or
    without BOM) or UTF-16 (Excel's "Unicode text"), separated by commas, semicolons or tabs (the
    one that makes the header known columns); with semicolons or tabs, ``numbers`` columns may
    use a decimal comma. A file that is none of these is an error that names what was seen.

    ``allowed``: the known columns (matched case-insensitively); ``required``: groups of which at
    least one column must be present (e.g. ``{"candidate_id", "sequence"}``).
    """
    text = decode_text(data, what)
    if not text.strip():
        raise_if_errors(
            [CsvError(1, None, "the file is empty: expected a header row and data")],
            what,
            UnreadableFile,
        )
    delimiter = _delimiter(text, allowed)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
    errors: list[CsvError] = []
    try:
        header = next(reader)
    except csv.Error as exc:
        raise_if_errors([CsvError(1, None, f"the header row is not valid CSV: {exc}")], what)
    columns = [h.strip().lower() for h in header]
    for i, col in enumerate(columns):
        if not col:
            errors.append(CsvError(1, None, f"column {i + 1} has an empty header"))
        elif col not in allowed:
            alone = (
                " (separate columns with commas, semicolons or tabs)" if len(columns) == 1 else ""
            )
            errors.append(
                CsvError(1, col, f"unknown column {col!r}; expected {sorted(allowed)}{alone}")
            )
        elif columns.index(col) != i:
            errors.append(CsvError(1, col, f"column {col!r} appears twice"))
    for group in required:
        if not group & set(columns):
            names = " or ".join(sorted(group))
            errors.append(CsvError(1, None, f"missing column {names}"))
    raise_if_errors(errors, what)
    rows: list[tuple[int, dict[str, str]]] = []
    row_no = 1
    try:
        for cells in reader:
            row_no += 1
            if not cells or all(not c.strip() for c in cells):
                continue  # blank lines are not rows
            if len(cells) != len(columns):
                errors.append(
                    CsvError(
                        row_no,
                        None,
                        f"{len(cells)} cells, expected {len(columns)} (one per column)",
                    )
                )
                continue
            row = {c: v.strip() for c, v in zip(columns, cells)}
            if delimiter != ",":
                for c in numbers & row.keys():
                    if DECIMAL_COMMA.fullmatch(row[c]):
                        row[c] = row[c].replace(",", ".")
            rows.append((row_no, row))
            if len(rows) > max_rows:
                # 413 at once: a file over the limit is refused whole, without reading the rest.
                raise PayloadTooLarge(
                    f"{what}: more than {max_rows} data rows (the limit, LLOME_MAX_UPLOAD_ROWS); "
                    "split the file. Nothing was stored.",
                    errors=[
                        CsvError(
                            row_no, None, f"row {row_no} is over the limit of {max_rows} data rows"
                        ).as_dict()
                    ],
                )
    except csv.Error as exc:
        errors.append(CsvError(row_no + 1, None, f"not valid CSV: {exc}"))
    if not rows and not errors:
        errors.append(CsvError(2, None, "no data rows after the header"))
    raise_if_errors(errors, what)
    return CsvTable(columns, rows)


# What a number cell may hold: ASCII sign, digits, one decimal point, an exponent. Python's
# float() also reads "1_0" as 10 and full-width or Arabic-Indic digits; a lab's file means none.
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_score(cell: str, column: str = "score") -> float | None:
    """A finite number, or None for an empty cell; ValueError with the reason otherwise."""
    if cell == "":
        return None
    if not NUMBER.fullmatch(cell):
        if cell.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise ValueError(
                f"{column} {cell!r} is not a finite number; mark failures with feasible=false"
            )
        raise ValueError(
            f"{column} {cell!r} is not a number (digits 0-9, an optional sign, "
            "decimal point and exponent, like -1.5e3)"
        )
    value = float(cell)
    if not math.isfinite(value):
        raise ValueError(
            f"score {cell!r} is not a finite number; mark failures with feasible=false"
        )
    return value


def parse_int(cell: str, column: str) -> int:
    """An integer cell in the same strict grammar; ValueError with the reason otherwise."""
    if not INTEGER.fullmatch(cell):
        raise ValueError(f"{column} {cell!r} is not an integer (digits 0-9)")
    return int(cell)


def parse_bool(cell: str) -> bool | None:
    if cell == "":
        return None
    word = cell.lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"feasible {cell!r} is not true or false")


def escape_cell(value: object) -> str:
    """A cell safe to open in a spreadsheet: formula-looking text gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def unescape_cell(cell: str) -> str:
    """The cell as ``escape_cell`` was given it: what we write, we read back."""
    if len(cell) > 1 and cell[0] == "'" and cell[1:].startswith(FORMULA_PREFIXES):
        return cell[1:]
    return cell


def write_rows(header: list[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """CSV text in chunks (header first), each cell escaped; for streaming responses."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, row in enumerate(rows):
        writer.writerow([escape_cell(v) for v in row])
        if i % 500 == 499:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
