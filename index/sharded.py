"""A sharded index: N ordinary index directories (one per shard, documents assigned by a hash of their id) and a
small top-level manifest holding what scoring across them needs.

    DIR/sharded.json          shard names, their commits, the corpus's BM25 totals, sha256 of every file below
    DIR/global_bm25.npz       the whole corpus's document frequency per term (first-seen order)
    DIR/global_vocab.json     those terms
    DIR/shard-NNN.rows.npy    each shard row's position in the whole corpus (segment rows in order, deleted ones
                              included): merged rankings break ties as the unsharded index does, by that position
    DIR/shard-NNN/            a complete index (`index.directory.IndexDirectory` opens it alone)

With the corpus's N, total length and document frequencies, a shard's BM25 scores are the unsharded index's
bit for bit (`index.bm25.Collection`). The top-level files are replaced by a rename of `sharded.json`, after the
shards' own commits; a reader that finds a shard at another commit than `sharded.json` records refuses it with
one line (an interrupted update, which the next `twostage update` finishes).

Example:
    >>> from index.sharded import shard_of
    >>> shard_of("doc-17", 4) in range(4)
    True
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from index.arrays import read_npy, read_npz
from index.bm25 import Collection, okapi_mean_idf
from index.manifest import IndexDirError, first_error, fsync_dir, fsync_file, sha256_file

SHARDED_FILE = "sharded.json"
GLOBAL_STATS = "global_bm25.npz"
GLOBAL_VOCAB = "global_vocab.json"
FORMAT = 1
# What a sharded index's writers put at its top level: shard folders, commit-named statistics and row files, a
# manifest not yet renamed. Unlisted ones are what an interrupted update left.
SHARDED_LEFTOVER = re.compile(r"shard-[0-9]{3}(\.rows(\.[0-9]+)?\.npy)?|global_(bm25|vocab)(\.[0-9]+)?\.(npz|json)"
                              r"|sharded\.json\.tmp")
HASH = "blake2b-64 of the UTF-8 document id, mod N"


def shard_name(i: int) -> str:
    return f"shard-{i:03d}"


def rows_file(i: int) -> str:
    return f"{shard_name(i)}.rows.npy"


def shard_of(doc_id: str, shards: int) -> int:
    """The shard that owns a document: stable across runs, machines and Python versions (not `hash()`)."""
    digest = hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def is_sharded(path: str | Path) -> bool:
    return (Path(path).expanduser() / SHARDED_FILE).is_file()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileInfo(_Strict):
    sha256: str
    bytes: int


class BM25Totals(_Strict):
    num_docs: int
    total_length: int
    okapi_mean_idf: float


class ShardedManifest(_Strict):
    format_version: int
    kind: str
    hash: str
    shards: list[str]
    shard_generations: list[int]
    bm25: BM25Totals | None
    next_row: int  # the corpus position the next added passage gets
    counts: dict[str, int]
    config: dict[str, Any]
    pipeline: dict[str, Any] | None = None
    models: dict[str, str] = {}
    components: list[str]
    embedding_dim: int | None = None
    library_version: str
    created: str
    files: dict[str, FileInfo]


@dataclass
class CorpusStats:
    """The whole corpus's BM25 statistics: its vocabulary in first-seen order and each term's document frequency,
    the number of passages and their total length."""

    vocab: list[str]
    doc_freq: np.ndarray
    num_docs: int
    total_length: int

    @property
    def okapi_mean(self) -> float:
        return okapi_mean_idf(self.doc_freq, self.num_docs)

    def for_shard(self, vocab: list[str], term_ids: dict[str, int] | None = None) -> Collection:
        """What a shard with vocabulary `vocab` scores with."""
        ids = term_ids if term_ids is not None else {t: i for i, t in enumerate(self.vocab)}
        try:
            df = self.doc_freq[np.fromiter((ids[t] for t in vocab), dtype=np.int64, count=len(vocab))]
        except KeyError as exc:
            raise ValueError(f"the shard indexes the term {exc.args[0]!r}, which the corpus statistics lack") from None
        return Collection(self.num_docs, self.total_length, df, self.okapi_mean)


def write_sharded(directory: Path, content: dict[str, Any], files: list[str]) -> None:
    """Write `sharded.json` atomically (temp file, fsync, rename) listing `files` with their sha256."""
    content = {**content, "format_version": FORMAT, "kind": "sharded", "hash": HASH}
    content["files"] = {}
    for name in files:
        path = directory / name
        fsync_file(path)
        content["files"][name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    ShardedManifest.model_validate(content)  # never write what the loader refuses
    tmp = directory / (SHARDED_FILE + ".tmp")
    tmp.write_text(json.dumps(content, indent=2, sort_keys=True, default=str), encoding="utf-8")
    fsync_file(tmp)
    os.replace(tmp, directory / SHARDED_FILE)
    fsync_dir(directory)


def save_corpus_stats(directory: Path, stats: CorpusStats, generation: int) -> list[str]:
    """The corpus statistics' two files, named after the commit they belong to (never overwritten in place)."""
    npz, vocab = _stats_names(generation)
    np.savez(directory / npz, doc_freq=stats.doc_freq.astype(np.int64))
    (directory / vocab).write_text(json.dumps(stats.vocab, ensure_ascii=False), encoding="utf-8")
    return [npz, vocab]


def _stats_names(generation: int) -> tuple[str, str]:
    if generation == 0:
        return GLOBAL_STATS, GLOBAL_VOCAB
    return f"global_bm25.{generation}.npz", f"global_vocab.{generation}.json"


def save_rows(directory: Path, shard: int, rows: np.ndarray, generation: int) -> str:
    name = rows_file(shard) if generation == 0 else f"{shard_name(shard)}.rows.{generation}.npy"
    np.save(directory / name, rows.astype(np.int64), allow_pickle=False)
    return name


@dataclass
class ShardedLayout:
    """A read `sharded.json` and the top-level files it lists, checked."""

    path: Path
    manifest: ShardedManifest
    corpus: CorpusStats | None
    rows: list[np.ndarray]  # per shard: corpus position of each segment row

    @property
    def generation(self) -> int:
        return sum(self.manifest.shard_generations)

    def shard_path(self, i: int) -> Path:
        return self.path / self.manifest.shards[i]


def read_layout(path: str | Path) -> ShardedLayout:
    """Read and check a sharded index's top level (`IndexDirError`, one line, for anything wrong)."""
    path = Path(path).expanduser()
    fix = f"rebuild it with `twostage build --ray local --shards N --output {path}`"
    try:
        raw = (path / SHARDED_FILE).read_bytes()
    except OSError as exc:
        raise IndexDirError(f"{path}: cannot read {SHARDED_FILE} ({exc.strerror or exc}); {fix}") from None
    try:
        manifest = ShardedManifest.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        detail = first_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise IndexDirError(f"{path}/{SHARDED_FILE} is not a valid sharded manifest ({detail}); {fix}") from None
    if manifest.format_version > FORMAT:
        raise IndexDirError(f"{path} is a sharded index of format {manifest.format_version}, newer than this "
                            f"library reads ({FORMAT}); upgrade twostage")
    data: dict[str, bytes] = {}
    for name, info in manifest.files.items():
        if "/" in name or name.startswith("."):
            raise IndexDirError(f"{path}/{SHARDED_FILE} lists {name!r}, not a plain file name; {fix}")
        try:
            blob = (path / name).read_bytes()
        except OSError as exc:
            raise IndexDirError(f"{path}/{name} cannot be read ({exc.strerror or exc}); {fix}") from None
        if len(blob) != info.bytes or hashlib.sha256(blob).hexdigest() != info.sha256:
            raise IndexDirError(f"{path}/{name} does not match {SHARDED_FILE} (damaged or replaced); {fix}")
        data[name] = blob
    gen = manifest.shard_generations
    if len(gen) != len(manifest.shards) or not manifest.shards:
        raise IndexDirError(f"{path}/{SHARDED_FILE} lists {len(manifest.shards)} shards and {len(gen)} commits; {fix}")
    corpus = None
    if manifest.bm25 is not None:
        npz = next((n for n in data if n.startswith("global_bm25")), None)
        vocab = next((n for n in data if n.startswith("global_vocab")), None)
        if npz is None or vocab is None:
            raise IndexDirError(f"{path}/{SHARDED_FILE} lists no corpus BM25 statistics; {fix}")
        df = read_npz(data[npz], ("doc_freq",))["doc_freq"]
        words = json.loads(data[vocab].decode("utf-8"))
        if len(words) != len(df) or (len(df) and df.min() < 1):
            raise IndexDirError(f"{path}: the corpus BM25 statistics are inconsistent; {fix}")
        corpus = CorpusStats(words, df, manifest.bm25.num_docs, manifest.bm25.total_length)
    rows = []
    for i in range(len(manifest.shards)):
        name = next((n for n in data if n.startswith(shard_name(i) + ".rows")), None)
        if name is None:
            raise IndexDirError(f"{path}/{SHARDED_FILE} lists no row positions for {manifest.shards[i]}; {fix}")
        rows.append(read_npy(data[name]))
    return ShardedLayout(path, manifest, corpus, rows)
