"""Read rows from JSONL / JSON / CSV / TSV / Parquet files, a ``datasets`` folder, or a folder or glob of them;
write JSONL atomically.

Rows are yielded one at a time (JSONL, CSV and Parquet are streamed), each with its source and 1-based line number
(or row index), so a bad row can be rejected with its place and nothing needs the whole file in memory.
"""

from __future__ import annotations

import contextlib
import csv
import glob as globlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from tunewise.catalog import _
from tunewise.errors import DataError, RowError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_BOM = b"\xef\xbb\xbf"
_GLOB_CHARS = set("*?[")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class RawRow:
    """One row as read: ``record`` when it parsed, else ``error`` (and ``raw``, the text kept for rejects.jsonl)."""

    source: str
    line: int
    record: Any = None
    error: RowError | None = None
    raw: Any = None


def is_hf_dataset_dir(path: Path) -> bool:
    """A folder written by ``datasets``' ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return path.is_dir() and (
        (path / "dataset_dict.json").is_file() or ((path / "state.json").is_file() and (path / "dataset_info.json").is_file())
    )


def resolve_paths(path: str | Path) -> list[Path]:
    """The files (or ``datasets`` folders) that ``path`` names: a file, a folder, or a glob. Raises DataError."""
    text = str(path)
    if any(c in text for c in _GLOB_CHARS) and not Path(text).exists():
        found = sorted(Path(p) for p in globlib.glob(text, recursive=True))
        found = [p for p in found if is_hf_dataset_dir(p) or (p.is_file() and p.suffix.lower() in EXTENSIONS)]
        if not found:
            raise DataError(_("no data file matches {text!r}; check the pattern (files must end in {ext_list})").format(
                text=text, ext_list=_ext_list()))
        return found
    p = Path(text)
    if not p.exists():
        raise DataError(_("data file {text!r} not found; set data.path to a JSONL/JSON/CSV/Parquet file, a "
                          "folder or a glob").format(text=text))
    if p.is_file():
        if p.suffix.lower() not in EXTENSIONS:
            raise DataError(_("{text}: unknown file type {suffix!r}; use one of {ext_list}").format(
                text=text, suffix=p.suffix or _('(none)'), ext_list=_ext_list()))
        return [p]
    if is_hf_dataset_dir(p):
        return [p]
    found = []
    for child in sorted(p.rglob("*")):
        if is_hf_dataset_dir(child):
            found.append(child)
        elif child.is_file() and child.suffix.lower() in EXTENSIONS and not any(d in found for d in child.parents):
            found.append(child)
    if not found:
        raise DataError(_("folder {text!r} holds no data file; put {ext_list} files in it").format(
            text=text, ext_list=_ext_list()))
    return found


def _ext_list() -> str:
    return ", ".join(EXTENSIONS)


def iter_rows(path: str | Path) -> Iterator[RawRow]:
    """Every row of every file that ``path`` names, in order."""
    for p in resolve_paths(path):
        yield from iter_file(p)


def iter_file(path: Path) -> Iterator[RawRow]:
    """Every row of one file (or ``datasets`` folder)."""
    if is_hf_dataset_dir(path):
        yield from _read_hf_dataset(path)
        return
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind == "jsonl":
        yield from _read_jsonl(path)
    elif kind == "json":
        yield from _read_json(path)
    elif kind in ("csv", "tsv"):
        yield from _read_csv(path, delimiter="\t" if kind == "tsv" else ",")
    elif kind == "parquet":
        yield from _read_parquet(path)
    else:
        raise DataError(_("{path}: unknown file type {suffix!r}; use one of {ext_list}").format(
            path=path, suffix=path.suffix, ext_list=_ext_list()))


def parse_json_line(source: str, number: int, data: bytes) -> RawRow:
    """One JSONL line (bytes, line ending already removed) to a RawRow."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raw = data.decode("utf-8", "replace")
        err = RowError("invalid_utf8", f"line {number} is not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8")
        return RawRow(source, number, error=err, raw=raw)
    try:
        record = json.loads(text)
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        col = getattr(exc, "colno", None)
        where = f" at column {col}" if col else ""
        err = RowError("invalid_json", f"line {number} is not valid JSON ({msg}{where})")
        return RawRow(source, number, error=err, raw=text)
    if not isinstance(record, dict):
        err = RowError("not_object", f"line {number} is a JSON {_json_kind(record)}, not an object with fields")
        return RawRow(source, number, error=err, raw=record)
    return RawRow(source, number, record=record)


def _json_kind(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    source = str(path)
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if number == 1 and line.startswith(_BOM):
                line = line[len(_BOM) :]
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            yield parse_json_line(source, number, line)


def _read_json(path: Path) -> Iterator[RawRow]:
    source = str(path)
    data = path.read_bytes()
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        yield RawRow(source, line, error=RowError("invalid_utf8", f"{path.name} is not valid UTF-8 (line {line}); re-save it as UTF-8"))
        return
    try:
        value = json.loads(text)
    except ValueError as exc:
        # a .json file that is really JSON Lines
        first = next((ln for ln in text.splitlines() if ln.strip()), "")
        try:
            looks_jsonl = isinstance(json.loads(first), dict)
        except ValueError:
            looks_jsonl = False
        if looks_jsonl:
            yield from _read_jsonl(path)
            return
        line = getattr(exc, "lineno", 1)
        err = RowError("invalid_json", f"{path.name} is not valid JSON ({getattr(exc, 'msg', exc)} at line {line})")
        yield RawRow(source, line, error=err, raw=None)
        return
    for index, record in enumerate(_json_records(value), 1):
        if isinstance(record, dict):
            yield RawRow(source, index, record=record)
        else:
            err = RowError("not_object", f"row {index} is a JSON {_json_kind(record)}, not an object with fields")
            yield RawRow(source, index, error=err, raw=record)


def _json_records(value: Any) -> list[Any]:
    """A JSON document's rows: an array; an object of equal-length arrays (columns); an object holding one array of
    objects (e.g. ``{"data": [...]}``); or a single object."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value:
        lists = {k: v for k, v in value.items() if isinstance(v, list)}
        if len(lists) == len(value) and len({len(v) for v in lists.values()}) == 1:
            if len(lists) == 1 and all(isinstance(x, dict) for x in next(iter(lists.values()))):
                return next(iter(lists.values()))
            if not any(k in value for k in ("messages", "conversations")):
                n = len(next(iter(lists.values())))
                return [{k: v[i] for k, v in lists.items()} for i in range(n)]
    return [value]


def _read_csv(path: Path, delimiter: str) -> Iterator[RawRow]:
    source = str(path)
    # surrogateescape keeps undecodable bytes so that the row they are in (only) can be rejected
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header: list[str] | None = None
        start = 1
        for values in reader:
            line, start = start, reader.line_num + 1
            if not values or not any(v.strip() for v in values):
                continue
            if header is None:
                header = [h.strip() for h in values]
                continue
            raw = dict(zip(header, values))
            if any(_has_surrogate(v) for v in values):
                text = delimiter.join(values).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                yield RawRow(source, line, error=RowError("invalid_utf8", f"line {line} is not valid UTF-8; re-save the file as UTF-8"), raw=text)
            elif len(values) != len(header):
                msg = f"line {line} has {len(values)} fields but the header has {len(header)}"
                yield RawRow(source, line, error=RowError("not_object", msg), raw=values)
            else:
                yield RawRow(source, line, record=raw)


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in text)


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    source = str(path)
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
        for record in batch.to_pylist():
            index += 1
            yield RawRow(source, index, record=record)


def _read_hf_dataset(path: Path) -> Iterator[RawRow]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    for split, ds in parts:
        source = str(path) if split is None else f"{path}[{split}]"
        index = 0
        for batch in ds.iter(batch_size=1024):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                index += 1
                yield RawRow(source, index, record=dict(zip(columns, values)))


# --------------------------------------------------------------------------------------------------------------------
# writing


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; it replaces ``path`` only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def dumps(record: Any) -> str:
    """One JSONL line (no newline)."""
    return json.dumps(record, ensure_ascii=False, default=str)


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Write records as JSON Lines atomically; returns how many were written."""
    n = 0
    with atomic_open(path) as f:
        for record in records:
            f.write(dumps(record) + "\n")
            n += 1
    return n


def write_json(path: str | Path, value: Any) -> None:
    """Write one JSON document atomically (indented)."""
    with atomic_open(path) as f:
        json.dump(value, f, ensure_ascii=False, indent=2, default=str)
        f.write("\n")
