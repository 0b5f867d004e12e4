"""Reading and validating corpora: BEIR folders, JSONL, CSV/TSV and folders of .txt/.md/.html/.rst files.

A folder reader says what it did not read: files of other types, broken links and links to folders are counted in
`ReadStats.skipped_files` and logged in one line; empty files count as empty documents. Hidden files and folders
(a name starting with "."; `.git`, `.DS_Store`) are never read and never counted.

Example:
    >>> from index.documents import read_corpus
    >>> docs = list(read_corpus("../shared/datasets/scifact"))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index.config import CorpusConfig

logger = logging.getLogger(__name__)

FOLDER_SUFFIXES = (".txt", ".md", ".html", ".htm", ".rst")
_HTML_SUFFIXES = (".html", ".htm")
# Elements whose text is not the page's text.
_HTML_DROPPED = ("script", "style", "nav", "noscript", "template", "head", "title")
# Elements that end a line of text (everything else is inline: its text runs on in the line around it).
_HTML_BLOCKS = ("address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "div", "dl", "dt",
                "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
                "hr", "li", "main", "ol", "p", "pre", "section", "summary", "table", "td", "th", "tr", "ul")
# reStructuredText section adornment: one punctuation character repeated (docutils' set).
_RST_ADORNMENT = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])\1+""")
# JSON may spell unpaired UTF-16 surrogates ("\\ud800"); such strings cannot be stored or tokenized.
_SURROGATE = re.compile("[\ud800-\udfff]")
# A record (the line's object counts as one level) may nest this deep: far more than real metadata needs, and far
# below where json.loads/json.dumps recurse out of stack, so whatever is read can always be stored and read back.
MAX_JSON_DEPTH = 64


class CorpusError(ValueError):
    """A corpus file cannot be read; the message names the file, the line and the fix."""


@dataclass
class Document:
    doc_id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


def model_text(title: str, text: str) -> str:
    """The one text every model reads for a document or passage (BM25's analyzer, the bi-encoder, the sparse
    encoder, the cross-encoder, training): title and text joined by a space, or the text alone.

    Example:
        >>> model_text("Tides", "The moon pulls the sea.")
        'Tides The moon pulls the sea.'
    """
    return f"{title} {text}".strip() if title else text


# How a reason for skipping a file reads after a count: (one, several). Extensions read as themselves.
_SKIP_WORDS = {"broken link": ("broken link", "broken links"), "link to a folder": ("link to a folder",
                                                                                    "links to folders"),
               "special file": ("special file", "special files"), "no extension": ("with no extension",) * 2}


@dataclass
class ReadStats:
    """What one read yielded and left out. `skipped_files` (folder corpora) counts the files not read, by
    extension (".pdf", "no extension") or by what they are ("broken link", "link to a folder", "special file":
    a pipe, socket or device)."""

    documents: int = 0
    skipped_empty: int = 0
    skipped_files: dict[str, int] = field(default_factory=dict)

    def skipped_files_line(self) -> str | None:
        """E.g. "skipped 3 files: 2 .pdf, 1 .docx (read: .txt .md .html .htm .rst)", or None when none were."""
        if not self.skipped_files:
            return None
        total = sum(self.skipped_files.values())
        most_first = sorted(self.skipped_files.items(), key=lambda kv: (-kv[1], kv[0]))
        kinds = ", ".join(f"{n} {_SKIP_WORDS.get(kind, (kind, kind))[n != 1]}" for kind, n in most_first)
        return f"skipped {total} file{'s' if total != 1 else ''}: {kinds} (read: {' '.join(FOLDER_SUFFIXES)})"


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "beir" if (path / "corpus.jsonl").is_file() else "folder"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    raise CorpusError(
        f"{path}: cannot tell the corpus format from the name; use a .jsonl, .csv or .tsv file, a BEIR folder "
        "(with corpus.jsonl) or a folder of .txt/.md/.html/.rst files, or set corpus.format in the config"
    )


def read_corpus(
    path: str | Path, config: CorpusConfig | None = None, stats: ReadStats | None = None
) -> Iterator[Document]:
    """Yield validated documents; raise `CorpusError` naming file and line on bad input.

    Duplicate ids and missing ids/text are errors; documents whose title and text are both empty are skipped
    and counted (or refused when `config.on_empty == "error"`).
    """
    config = config or CorpusConfig()
    stats = stats if stats is not None else ReadStats()
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder; pass the corpus file or BEIR folder with --corpus")
    fmt = detect_format(path) if config.format == "auto" else config.format
    if fmt == "beir":
        if path.is_dir():
            path = path / "corpus.jsonl"
        raw = _read_jsonl(path, config)
    elif fmt == "jsonl":
        raw = _read_jsonl(path, config)
    elif fmt in ("csv", "tsv"):
        raw = _read_delimited(path, config, fmt)
    else:
        raw = _read_folder(path, config, stats)
    seen: dict[str, str] = {}
    for where, doc in raw:
        if doc.doc_id in seen:
            raise CorpusError(
                f"{where}: duplicate document id {doc.doc_id!r} (first seen at {seen[doc.doc_id]}); "
                "document ids must be unique"
            )
        seen[doc.doc_id] = where
        if not doc.text.strip() and not doc.title.strip():
            if config.on_empty == "error":
                raise CorpusError(f"{where}: document {doc.doc_id!r} has no title and no text")
            stats.skipped_empty += 1
            continue
        stats.documents += 1
        yield doc
    if stats.skipped_empty:
        logger.warning("%s: skipped %d documents with no title and no text", path, stats.skipped_empty)
    if stats.documents == 0:
        raise CorpusError(f"{path}: the corpus holds no documents with text; nothing to index")


def _decode_lines(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                    "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None


def _field(record: dict[str, Any], name: str, where: str, *, required: bool, fallback: str | None = None) -> str:
    value = record.get(name)
    if value is None and fallback is not None:
        value = record.get(fallback)
    if value is None:
        if required:
            keys = ", ".join(sorted(record)) or "none"
            raise CorpusError(f"{where}: missing field {name!r} (fields present: {keys}); set the field name "
                              f"in the config (corpus.{'id' if name in ('_id', 'id') else 'text'}_field)")
        return ""
    if isinstance(value, (dict, list)):
        raise CorpusError(f"{where}: field {name!r} must be a string or number, not {type(value).__name__}")
    value = str(value)
    if _SURROGATE.search(value):
        raise CorpusError(f"{where}: field {name!r} holds an unpaired surrogate escape (like \\ud800), which is "
                          "not valid Unicode; fix the text at its source")
    return value


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests containers more than `limit` levels (itself counted). Iterative, so neither a deep
    nor a self-containing value can exhaust the stack the way json.dumps would."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _too_deep(where: str) -> CorpusError:
    return CorpusError(f"{where}: nested more than {MAX_JSON_DEPTH} levels deep (the record's own object is level "
                       "1); flatten its metadata")


def _make_document(record: dict[str, Any], config: CorpusConfig, where: str) -> Document:
    if _nested_deeper_than(record, MAX_JSON_DEPTH):
        raise _too_deep(where)
    id_fallback = "id" if config.id_field == "_id" else None
    doc_id = _field(record, config.id_field, where, required=True, fallback=id_fallback).strip()
    if not doc_id:
        raise CorpusError(f"{where}: empty document id")
    text = _field(record, config.text_field, where, required=True)
    title = _field(record, config.title_field, where, required=False)
    used = {config.id_field, config.text_field, config.title_field, id_fallback}
    metadata = {k: v for k, v in record.items() if k not in used}
    nested = metadata.pop("metadata", None)
    if isinstance(nested, dict):
        metadata.update(nested)
    if metadata and _SURROGATE.search(json.dumps(metadata, ensure_ascii=False, default=str)):
        raise CorpusError(f"{where}: a metadata field holds an unpaired surrogate escape (like \\ud800), which is "
                          "not valid Unicode; fix the text at its source")
    return Document(doc_id=doc_id, text=text, title=title, metadata=metadata)


def _read_jsonl(path: Path, config: CorpusConfig) -> Iterator[tuple[str, Document]]:
    if not path.is_file():
        raise CorpusError(f"{path}: no such file; a BEIR folder must contain corpus.jsonl")
    for lineno, line in _decode_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno}); "
                              "each line must be one JSON object") from None
        except RecursionError:  # json's C parser recurses once per level: far past MAX_JSON_DEPTH
            raise _too_deep(where) from None
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, _make_document(record, config, where)


class _LineFeed:
    """The lines csv.reader reads, one per call, remembering where the current record started.

    Unless multi-line fields are allowed, a record that asks for a second line is refused at once: a stray quote
    would otherwise read the rest of the file into one field before anything could notice.
    """

    def __init__(self, path: Path, multiline: bool) -> None:
        self._path = path
        self._lines = _decode_lines(path)
        self._multiline = multiline
        self._new_record = True
        self.start = 0  # the first line of the record being read
        self.last = 0  # the last line handed out

    def next_record(self) -> None:
        self._new_record = True

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        lineno, line = next(self._lines)
        if self._new_record:
            self.start, self._new_record = lineno, False
        elif not self._multiline:
            raise CorpusError(
                f"{self._path}:{self.start}: a quoted field opens on this line and runs on into line {lineno}, "
                'so a stray " would swallow the rows after it; fix the quote (a " inside a quoted field is '
                'written ""), set corpus.multiline_fields: true if fields really span lines, or '
                "corpus.quoting: none if quotes are plain text"
            )
        self.last = lineno
        return line


def _csv_error(feed: _LineFeed, path: Path, exc: csv.Error) -> CorpusError:
    if str(exc) == "unexpected end of data":  # strict mode's word for an open quote at the end of the file
        lines = f"line {feed.start}" if feed.last == feed.start else f"lines {feed.start}-{feed.last}"
        return CorpusError(f"{path}:{feed.start}: a quoted field in the record that starts on this line is never "
                           f"closed: it runs to the end of the file ({lines}); fix the quote")
    if str(exc).startswith("new-line character seen in unquoted field"):
        return CorpusError(f"{path}:{feed.last}: a carriage return (\\r) inside an unquoted field; quote the field "
                           "or remove the \\r (a file with old Mac line ends: convert them to \\n)")
    return CorpusError(f"{path}:{feed.last}: malformed quoting ({exc}); a field that starts with \" must end with \" "
                       'before the next separator (a " inside it is written ""), or set corpus.quoting: none if '
                       "quotes are plain text")


def _delimited_rows(path: Path, config: CorpusConfig, fmt: str) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the line each starts on. Quoting is strict: an unbalanced quote is an error, never a
    field that silently swallows the rows after it."""
    csv.field_size_limit(sys.maxsize)
    quoted = config.quoting == "csv" or (config.quoting == "auto" and fmt == "csv")
    feed = _LineFeed(path, config.multiline_fields)
    reader = csv.reader(feed, delimiter="," if fmt == "csv" else "\t", strict=True,
                        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
    while True:
        feed.next_record()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _csv_error(feed, path, exc) from None
        if row:
            yield feed.start, row


def _read_delimited(path: Path, config: CorpusConfig, fmt: str) -> Iterator[tuple[str, Document]]:
    rows = _delimited_rows(path, config, fmt)
    first = next(rows, None)
    if first is None:
        raise CorpusError(f"{path}: empty file; the first row must name the columns")
    header = first[1]
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        if len(row) > len(header):
            raise CorpusError(f"{where}: more values than header columns ({len(header)})")
        yield where, _make_document(dict(zip(header, row)), config, where)


def _shown(text: str) -> str:
    """`text` safe to print: bytes of a non-UTF-8 file name (kept by Python as lone surrogates) as \\xNN."""
    return os.fsencode(text).decode("utf-8", "backslashreplace") if _SURROGATE.search(text) else text


def _folder_files(path: Path, stats: ReadStats) -> list[Path]:
    """The files below `path` that are read, sorted; the others counted in `stats.skipped_files`. Hidden files
    and folders are passed over uncounted (a .git folder is not a corpus's noise), and links to folders are not
    followed (as Path.rglob does not: a link may point back up the tree)."""
    found: list[Path] = []
    skipped = stats.skipped_files
    for folder, subfolders, names in os.walk(path):
        base = Path(folder)
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        links = sum(1 for d in subfolders if (base / d).is_symlink())  # os.walk lists them but does not enter
        if links:
            skipped["link to a folder"] = skipped.get("link to a folder", 0) + links
        for name in names:
            if name.startswith("."):
                continue
            file = base / name
            suffix = file.suffix.lower()
            if not file.exists():
                kind = "broken link"
            elif not file.is_file():
                kind = "special file"
            elif suffix in FOLDER_SUFFIXES:
                found.append(file)
                continue
            else:
                kind = _shown(suffix) or "no extension"
            skipped[kind] = skipped.get(kind, 0) + 1
    return sorted(found)


def _rst_title(content: str) -> str:
    """The first section title of a reStructuredText text: a line underlined (and maybe overlined) with one
    punctuation character repeated at least as long as the title, or at least 4 times (docutils' rule)."""
    lines = [line.rstrip() for line in content.splitlines()]
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        if not title.strip() or _RST_ADORNMENT.fullmatch(title) or not _RST_ADORNMENT.fullmatch(under):
            continue
        overlined = i > 0 and lines[i - 1] == under
        if title[0].isspace() and not overlined:  # an indented line is a block quote, not a title
            continue
        if len(under) >= len(title.strip()) or len(under) >= 4:
            return title.strip()
    return ""


def _html_text(content: str) -> tuple[str, str]:
    """`(title, text)` of an HTML page: the text a browser shows, one line per paragraph, heading, list item or
    cell (whitespace collapsed as HTML does, kept inside <pre>), without scripts, styles, navigation, <head> or
    <title>; the title is the <title>, else the first <h1> (which stays in the text, as a Markdown heading does)."""
    import warnings

    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, NavigableString, XMLParsedAsHTMLWarning

    with warnings.catch_warnings():
        # A page whose whole text looks like a URL or file name, or an XHTML page: both are parsed as asked.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(content, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else ""
    for tag in soup.find_all(_HTML_DROPPED):
        tag.decompose()
    if not title and (h1 := soup.find("h1")):
        title = " ".join(h1.get_text(" ").split())
    for node in soup.find_all(string=True):
        if type(node) is NavigableString and not node.find_parent("pre"):  # not comments, doctype, CDATA
            node.replace_with(re.sub(r"\s+", " ", node))
    for tag in soup.find_all(_HTML_BLOCKS):
        tag.insert_before("\n")
        tag.insert_after("\n")
    lines = (line.strip() for line in soup.get_text().splitlines())
    return title, "\n".join(line for line in lines if line)


def _folder_document(file: Path, content: str) -> tuple[str, str]:
    """`(title, text)` of one file; both empty for a file of nothing but whitespace (skipped as an empty
    document). The title is the file name unless the file names one itself."""
    suffix = file.suffix.lower()
    if suffix in _HTML_SUFFIXES:
        title, text = _html_text(content)
        return ((title or file.stem) if text or title else ""), text
    if not content.strip():
        return "", ""
    title = ""
    if suffix == ".md":
        first = content.lstrip().split("\n", 1)[0]
        if first.startswith("#"):
            title = first.lstrip("#").strip()
    elif suffix == ".rst":
        title = _rst_title(content)
    return title or file.stem, content


def _read_folder(path: Path, config: CorpusConfig, stats: ReadStats) -> Iterator[tuple[str, Document]]:
    files = _folder_files(path, stats)
    skipped = stats.skipped_files_line()
    if not files:
        raise CorpusError(f"{path}: no .txt or .md files found, nor .html/.htm/.rst (and no corpus.jsonl for a "
                          "BEIR folder)" + (f"; {skipped}" if skipped else ""))
    if skipped:
        logger.warning("%s: %s", path, skipped)
    owners: dict[str, Path] = {}
    for file in files:
        if _SURROGATE.search(str(file)):  # bytes that are not UTF-8, kept by Python as lone surrogates
            raise CorpusError(f"{_shown(str(file))}: the path is not valid UTF-8, so it cannot be a document id or "
                              "be stored; rename the file or folder (e.g. convmv -f latin1 -t utf8 -r --notest "
                              "FOLDER)")
        try:
            content = file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = file.read_bytes()[: exc.start].count(b"\n") + 1
            raise CorpusError(f"{file}:{line}: not valid UTF-8; re-encode the file as UTF-8") from None
        title, text = _folder_document(file, content)
        relative = file.relative_to(path)
        doc_id = (relative if config.folder_id_suffix else relative.with_suffix("")).as_posix()
        if doc_id in owners:
            raise CorpusError(f"{file}: document id {doc_id!r} is also the id of {owners[doc_id]} (folder ids drop "
                              "the file suffix); rename one of them, or set corpus.folder_id_suffix: true to keep "
                              "suffixes in ids (notes.md, notes.txt)")
        owners[doc_id] = file
        yield str(file), Document(doc_id=doc_id, text=text, title=title, metadata={"path": str(file)})


def read_documents(docs: Iterable[Document | dict[str, Any]]) -> list[Document]:
    """Validate in-memory documents (dicts with `_id`/`id`, `text`, optional `title`)."""
    out: list[Document] = []
    config = CorpusConfig()
    for i, doc in enumerate(docs):
        out.append(doc if isinstance(doc, Document) else _make_document(dict(doc), config, f"document #{i}"))
    return out
