"""Reading a ledger CSV into validated batches, every bad row reported by its line.

Most ledger files are plain: no quotes, one row per line. A batch of such lines is split
into columns with ``str.split`` in C, which is several times faster than ``csv.reader``
plus a transposition, and gives the same cells (a property test holds them together).
A batch with any quote, or anything else unusual, goes to ``csv.reader``, which reads on
past the batch when a quoted cell spans lines.
"""

from __future__ import annotations

import csv
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice, repeat
from typing import TextIO

from cloudgreet_billing.domain.ledger import DraftParser
from cloudgreet_billing.domain.ledger_batch import BATCH_ROWS, BatchParser, LedgerBatch
from cloudgreet_billing.errors import BadInput
from cloudgreet_billing.services import Progress

REQUIRED_COLUMNS = ("customer_id", "kind", "amount", "currency", "occurred_at")
OPTIONAL_COLUMNS = ("invoice_id", "description", "external_id")
ALL_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
#: Bad rows listed one by one; past this only their count is kept, to bound memory.
MAX_LISTED_ERRORS = 10_000


class LedgerCsv:
    """Validated batches from a CSV stream.

    Iterating yields batches (``domain.ledger_batch``) while the file is clean. After the
    first bad row it yields nothing more but reads on, so that every bad row is reported,
    and at the end it raises ``BadInput``: the store's transaction then rolls back and
    nothing is written.
    """

    def __init__(self, stream: TextIO, source: str, progress: Progress | None = None) -> None:
        self.source = source
        self._progress = progress
        self.rows = 0
        self.errors: list[str] = []
        self.bad_rows = 0
        self._lines = _Lines(stream)
        self._reader = csv.reader(self._lines)
        #: Lines split here rather than by the reader, whose ``line_num`` misses them.
        self._split_lines = 0
        self._unreadable: csv.Error | None = None
        #: The file lines of the rows yielded: per batch, its first row's number (1-based,
        #: in import order) and its rows' lines (a range for a plain batch).
        self._batch_starts: list[int] = []
        self._batch_lines: list[Sequence[int]] = []
        self._yielded = 0

    def _bad(self, line: int, message: str) -> None:
        self.bad_rows += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(f"line {line}: {message}")

    def _line(self) -> int:
        """The line the last row read ends on."""
        return self._split_lines + self._reader.line_num

    def line_of(self, row: int) -> int:
        """The file line of the ``row``-th row yielded (1-based), as the store numbers the
        rows of an import; for a row spanning lines, the line it ends on."""
        at = bisect_right(self._batch_starts, row) - 1
        if at < 0 or row - self._batch_starts[at] >= len(self._batch_lines[at]):
            raise IndexError(f"row {row} was not read")
        return self._batch_lines[at][row - self._batch_starts[at]]

    def _yield(self, batch: LedgerBatch, lines: Sequence[int]) -> LedgerBatch:
        self._batch_starts.append(self._yielded + 1)
        self._batch_lines.append(_compact(lines))
        self._yielded += batch.size
        return batch

    def __iter__(self) -> Iterator[LedgerBatch]:
        try:
            first = next(self._reader, None)
            if first is not None:
                yield from self._batches(_Layout(first, self.source), first)
        except csv.Error as exc:  # in the first row
            self._bad(self._line(), f"unreadable CSV ({exc})")
        except UnicodeDecodeError:
            raise BadInput(
                f"{self.source} is not UTF-8 text", hint="save the file as CSV UTF-8"
            ) from None
        if self.bad_rows:
            more = self.bad_rows - len(self.errors)
            listed = self.errors + ([f"… and {more} more bad rows"] if more > 0 else [])
            raise BadInput(
                f"{self.source}: {self.bad_rows} bad row{'s' if self.bad_rows != 1 else ''}; "
                "nothing was imported",
                hint="fix the rows listed and import the file again",
                errors=listed,
            )

    def _batches(self, layout: _Layout, first: list[str]) -> Iterator[LedgerBatch]:
        fast, slow = BatchParser(), DraftParser()
        pending = [] if layout.has_header else [(first, self._line())]
        while True:
            lines = [] if pending else self._lines.take(BATCH_ROWS)
            by_position = layout.split(lines) if lines else None
            if by_position is not None:
                count = len(lines)
                self._split_lines += count
                batch = fast(layout.in_contract_order(by_position))
                numbers: Sequence[int] = _lines_ending(self._line(), count)
                if batch is None:
                    rows = [line.rstrip("\r\n").split(",") for line in lines]
                    numbered = zip(rows, numbers, strict=True)
                    batch, numbers = self._row_by_row(numbered, layout, slow)
                else:
                    self.rows += count
            else:
                self._lines.unread(lines)
                read = pending + self._read_rows()
                pending = []
                if not read:
                    return
                count = len(read)
                batch = layout.fast([row for row, _ in read], fast)
                if batch is None:
                    batch, numbers = self._row_by_row(read, layout, slow)
                else:
                    numbers = [line for _, line in read]
                    self.rows += count
            if self._progress is not None:
                self._progress(count)
            if batch is not None and not self.bad_rows:
                yield self._yield(batch, numbers)
            if self._unreadable is not None:
                self._bad(self._line(), f"unreadable CSV ({self._unreadable})")
                return

    def _read_rows(self) -> list[tuple[list[str], int]]:
        """Rows through ``csv.reader``, each with the line it ends on: until the lines
        given back are used up (a quoted cell may take it further), and at least one.
        A reader failure ends the file; the rows before it are still returned."""
        rows: list[tuple[list[str], int]] = []
        try:
            while self._lines.unread_count or not rows:
                row = next(self._reader, None)
                if row is None:
                    break
                rows.append((row, self._line()))
        except csv.Error as exc:
            self._unreadable = exc
        return rows

    def _row_by_row(
        self, rows: Iterable[tuple[list[str], int]], layout: _Layout, parse: DraftParser
    ) -> tuple[LedgerBatch | None, list[int]]:
        """A batch the column-wise check declined: blank lines, a bad row, or cells that
        are valid but not canonical (`` cus_1 ``, ``USD``). Each row goes through
        ``make_draft``'s rules and every bad row is reported by its line. Returned with
        the lines of its rows."""
        drafts = []
        lines = []
        for row, line in rows:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            self.rows += 1
            problem = layout.width_problem(row)
            if problem:
                self._bad(line, problem)
                continue
            try:
                # Only optional cells can be None: the header check saw every required one.
                drafts.append(parse(*layout.cells(row)))  # type: ignore[arg-type]
                lines.append(line)
            except BadInput as exc:
                self._bad(line, exc.message)
        return (LedgerBatch.of(drafts) if drafts else None), lines


class _Lines:
    """The stream's lines for ``csv.reader``, with lines given back read first."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._unread: deque[str] = deque()

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._unread:
            return self._unread.popleft()
        return next(self._stream)

    @property
    def unread_count(self) -> int:
        return len(self._unread)

    def unread(self, lines: list[str]) -> None:
        self._unread.extend(lines)

    def take(self, count: int) -> list[str]:
        """Up to ``count`` lines; the stream's are read in C, without a call per line."""
        if self._unread:
            return [self._unread.popleft() for _ in range(min(count, len(self._unread)))]
        return list(islice(self._stream, count))


class _Layout:
    """Where each contract column sits in this file's rows, from its first row."""

    def __init__(self, first: list[str], source: str) -> None:
        names = [cell.strip().lower() for cell in first]
        # A first row naming any contract column is a header; otherwise the file is
        # in the contract's column order with no header.
        self.has_header = bool(set(names) & set(ALL_COLUMNS))
        if not self.has_header:
            names = list(ALL_COLUMNS)
        _check_header(names, source)
        self.width = len(names)
        self.minimum = self.width if self.has_header else len(REQUIRED_COLUMNS)
        #: Positions of each contract column in this file (-1: absent), so rows are read
        #: by index rather than through a dict per row.
        self.at = [names.index(name) if name in names else -1 for name in ALL_COLUMNS]

    def width_problem(self, row: list[str]) -> str | None:
        if self.minimum <= len(row) <= self.width:
            return None
        expected = (
            str(self.width) if self.minimum == self.width else f"{self.minimum} to {self.width}"
        )
        return f"expected {expected} columns, found {len(row)}"

    def cells(self, row: list[str]) -> list[str | None]:
        count = len(row)
        return [row[i] if 0 <= i < count else None for i in self.at]

    def in_contract_order(self, by_position: list[Sequence[str]]) -> list[Sequence[str] | None]:
        """Columns as the file orders them, in the import's order (absent: ``None``)."""
        count = len(by_position)
        return [by_position[i] if 0 <= i < count else None for i in self.at]

    def split(self, lines: list[str]) -> list[Sequence[str]] | None:
        """Plain lines (no quote; each a row of one allowed width) as columns in the
        file's order; ``None`` for anything ``csv.reader`` must read."""
        text = "".join(lines)
        if '"' in text:
            return None
        commas = set(map(str.count, lines, repeat(",")))
        if len(commas) != 1:
            return None
        count = commas.pop() + 1
        if not self.minimum <= count <= self.width:
            return None
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        cells = text.removesuffix("\n").replace("\n", ",").split(",")
        if len(cells) != count * len(lines):
            return None  # a lone CR inside a line, which csv.reader must judge
        return [cells[i::count] for i in range(count)]

    def fast(self, rows: list[list[str]], parse: BatchParser) -> LedgerBatch | None:
        """Rows from ``csv.reader``, checked column-wise when every row has one allowed
        width."""
        widths = set(map(len, rows))
        if len(widths) != 1:
            return None
        (count,) = widths
        if not self.minimum <= count <= self.width:
            return None
        return parse(self.in_contract_order(list(zip(*rows, strict=True))))


def _check_header(names: list[str], source: str) -> None:
    unknown = [name for name in names if name not in ALL_COLUMNS]
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    twice = len(set(names)) != len(names)
    if not (unknown or missing or twice):
        return
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown {', '.join(unknown)}")
    if twice:
        problems.append("a column named twice")
    raise BadInput(
        f"{source}: the header has {'; '.join(problems)}",
        hint=f"columns are {','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]",
    )


def _compact(lines: Sequence[int]) -> Sequence[int]:
    """Line numbers kept for a whole import: a range when consecutive, else an array."""
    if isinstance(lines, range) or not lines:
        return lines
    if lines[-1] - lines[0] + 1 == len(lines):
        return range(lines[0], lines[-1] + 1)
    return array("q", lines)


def _lines_ending(last_line: int, count: int) -> range:
    """The line numbers of ``count`` one-line rows, the last ending on ``last_line``."""
    return range(last_line - count + 1, last_line + 1)
