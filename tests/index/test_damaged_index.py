"""Damaged or foreign indexes are refused with a message that says what to do; loading never unpickles and never
runs a model's own code unless the config asks for it."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index.builder import build_index
from index.dense import Encoder
from index.directory import IndexDirectory
from index.manifest import MANIFEST_FILE, IndexDirError, sha256_file
from index.runtime.models import ModelNotAvailableError
from rerank.cross_encoder import CrossEncoderReranker
from retrieval import SearchPipeline
from retrieval.config import load_config
from tests.conftest import SAMPLE_CORPUS, _copy_tokenizer, _tiny_bert_config, pipeline_config
from tests.reliability import answers, bm25_only, copy_index

FILES = ["documents.sqlite", "fields.npz", "fields.json", "bm25.npz", "bm25_vocab.json", "embeddings.npy",
         "faiss.index"]
REBUILD = r"rebuild it with: python scripts/build_index.py"


@pytest.fixture
def index_copy(tmp_path, sample_index) -> Path:
    return copy_index(sample_index, tmp_path / "idx")


def _manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST_FILE).read_text())


def _write_manifest(path: Path, manifest: dict) -> None:
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def _rehash(path: Path) -> None:
    """What a careless copy (or an attacker with write access) does: make the manifest match the files."""
    manifest = _manifest(path)
    for name in manifest["files"]:
        manifest["files"][name] = {"sha256": sha256_file(path / name), "bytes": (path / name).stat().st_size}
    _write_manifest(path, manifest)


def test_every_file_of_the_sample_index_is_covered(sample_index):
    assert sorted(_manifest(sample_index)["files"]) == sorted(FILES)


@pytest.mark.parametrize("name", FILES)
def test_missing_file(index_copy, name):
    (index_copy / name).unlink()
    with pytest.raises(IndexDirError, match=rf"file {name} listed in the manifest is missing; {REBUILD}"):
        IndexDirectory.load(index_copy)


def test_missing_manifest(index_copy):
    (index_copy / MANIFEST_FILE).unlink()
    with pytest.raises(IndexDirError, match=rf"is not an index \(no manifest.json\); {REBUILD}"):
        IndexDirectory.load(index_copy)


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("name", FILES)
def test_truncated_file(index_copy, name, verify):
    """Sizes are checked even with index.verify: false (the cheap check that catches half-copied files)."""
    data = (index_copy / name).read_bytes()
    (index_copy / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexDirError, match=rf"{name} is truncated or changed .*; {REBUILD}"):
        IndexDirectory.load(index_copy, verify=verify)


@pytest.mark.parametrize("name", FILES)
def test_flipped_byte_is_caught_by_sha256(index_copy, name):
    path = index_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IndexDirError, match=rf"{name} is corrupted \(sha256 does not match the manifest\); {REBUILD}"):
        IndexDirectory.load(index_copy)


@pytest.mark.parametrize("name", ["bm25.npz", "embeddings.npy", "faiss.index", "documents.sqlite",
                                  "bm25_vocab.json"])
def test_truncated_file_behind_a_matching_manifest(index_copy, name):
    """Even when the manifest was rewritten to match a truncated file, the readers fail into one clear error."""
    data = (index_copy / name).read_bytes()
    (index_copy / name).write_bytes(data[: len(data) // 3])
    _rehash(index_copy)
    with pytest.raises(IndexDirError, match=r"cannot read the index .*; rebuild the index with scripts/build_index"):
        IndexDirectory.load(index_copy)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: {**m, "format_version": 99},
     r"has index format 99, newer than this library reads \(2\); upgrade the library or " + REBUILD),
    (lambda m: {k: v for k, v in m.items() if k != "format_version"},
     r"has no format_version; it was not written by this library"),
    (lambda m: [m], r"has no format_version"),
    (lambda m: {**m, "config": {"bm25": {"k1": "high"}}},
     r"the build config in manifest.json is not valid \(config\['bm25'\]\['k1'\]: Input should be a valid number"),
    (lambda m: {**m, "embedding_dim": 64}, r"FAISS dimension 32 != manifest 64"),
], ids=["newer-format", "no-format-version", "not-an-object", "bad-build-config", "wrong-dimension"])
def test_foreign_or_edited_manifest(index_copy, edit, message):
    _write_manifest(index_copy, edit(_manifest(index_copy)))
    with pytest.raises(IndexDirError, match=message):
        IndexDirectory.load(index_copy)


def test_damaged_manifest_json(index_copy):
    (index_copy / MANIFEST_FILE).write_bytes(b'{"format_version": 1, "files": {')
    with pytest.raises(IndexDirError, match=rf"manifest.json is damaged .*; {REBUILD}"):
        IndexDirectory.load(index_copy)


def test_components_from_two_builds(tmp_path, index_copy):
    """FAISS + embeddings copied in from an index of another corpus: the passage counts disagree."""
    other_corpus = tmp_path / "other.jsonl"
    other_corpus.write_text('{"_id": "x", "text": "one document"}\n')
    other = tmp_path / "other"
    build_index(other_corpus, other, bm25_only(), show_progress=False)
    shutil.copy(other / "bm25.npz", index_copy / "bm25.npz")
    shutil.copy(other / "bm25_vocab.json", index_copy / "bm25_vocab.json")
    _rehash(index_copy)
    with pytest.raises(IndexDirError, match=r"components disagree on the number of passages \(24 in the store, "
                                            r"\{'bm25': 1\}\)"):
        IndexDirectory.load(index_copy)


@pytest.mark.parametrize("where", ["does-not-exist", "a-file"])
def test_index_path_that_is_not_an_index(tmp_path, where):
    path = tmp_path / where
    if where == "a-file":
        path.write_text("hello")
    message = "does not exist; build one with scripts/build_index.py" if where == "does-not-exist" else (
        "is not an index")
    with pytest.raises(IndexDirError, match=message):
        IndexDirectory.load(path)


# -- an index that does not match the config --------------------------------------------------------------------


def test_different_embedding_model(sample_index, tiny_bi_encoder, tmp_path):
    other = shutil.copytree(tiny_bi_encoder, tmp_path / "other-model")
    with pytest.raises(IndexDirError, match=r"was built with the embedding model .* but the config asks for "
                                            r".*other-model'; rebuild the index or change first_stage.dense.model"):
        SearchPipeline.from_config(pipeline_config(sample_index, other))


def _tiny_bi_encoder(path: Path, hidden: int) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertModel

    torch.manual_seed(0)
    config = _tiny_bert_config()
    config.hidden_size, config.intermediate_size = hidden, 2 * hidden
    raw = path.with_name(path.name + "-raw")
    BertModel(config).save_pretrained(raw)
    _copy_tokenizer(raw)
    word = Transformer(str(raw), max_seq_length=64)
    SentenceTransformer(modules=[word, Pooling(hidden, "mean")]).save(str(path))
    return path


def test_model_replaced_by_one_of_another_dimension(tmp_path, tiny_bi_encoder):
    """Same model path, new weights of another width (a model updated in place): refused before any query."""
    model = shutil.copytree(tiny_bi_encoder, tmp_path / "model")
    config = pipeline_config(tmp_path / "idx", model)
    build_index(SAMPLE_CORPUS, tmp_path / "idx", load_config(config).build_config(), show_progress=False)
    shutil.rmtree(model)
    _tiny_bi_encoder(model, hidden=48)
    with pytest.raises(IndexDirError, match=r"gives 48-dim vectors but the index holds 32-dim ones; rebuild the "
                                            r"index with this model"):
        SearchPipeline.from_config(config)


def test_other_analyzer_or_missing_component(sample_index, tiny_bi_encoder, tmp_path):
    config = pipeline_config(sample_index, tiny_bi_encoder, bm25={"analyzer": {"stemmer": None}})
    with pytest.raises(IndexDirError, match=r'was built with first_stage.bm25.analyzer.stemmer: "english" but the '
                                            r"config has first_stage.bm25.analyzer.stemmer: null; rebuild the index"):
        SearchPipeline.from_config(config)
    build_index(SAMPLE_CORPUS, tmp_path / "bm25", bm25_only(), show_progress=False)
    with pytest.raises(IndexDirError, match=r"the config enables dense but .* was built without it; rebuild the "
                                            r"index or set first_stage.dense.enabled: false"):
        SearchPipeline.from_config(pipeline_config(tmp_path / "bm25", tiny_bi_encoder))


# -- untrusted files: no pickle, no model code -------------------------------------------------------------------


class _Payload:
    """Unpickling this creates the marker file: proof that the loader executed code from the index."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _npy_with_pickle(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([_Payload(str(marker))], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["embeddings.npy", "bm25.npz"])
def test_pickled_arrays_are_never_loaded(index_copy, tmp_path, name):
    marker = tmp_path / "pwned"
    payload = _npy_with_pickle(marker)
    if name == "bm25.npz":  # replace one member of the archive
        with zipfile.ZipFile(index_copy / name) as z:
            members = {m: z.read(m) for m in z.namelist() if m != "tf.npy"}
        with zipfile.ZipFile(index_copy / name, "w") as z:
            for member, data in members.items():
                z.writestr(member, data)
            z.writestr("tf.npy", payload)
    else:
        (index_copy / name).write_bytes(payload)
    _rehash(index_copy)
    refused = r"Object arrays cannot be loaded when allow_pickle=False|Array can't be memory-mapped: Python objects"
    with pytest.raises(IndexDirError, match=rf"cannot read the index \(ValueError: ({refused})"):
        IndexDirectory.load(index_copy)
    assert not marker.exists()


def test_loading_and_querying_never_unpickle(monkeypatch, sample_index, tiny_bi_encoder):
    """Every unpickling entry point is made to fail; a full load and query must not notice."""
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle was used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    pipe = SearchPipeline.from_config(pipeline_config(sample_index, tiny_bi_encoder))
    assert all(answers(pipe)[:5])


def _model_with_own_code(tmp_path: Path, tiny_bi_encoder: Path) -> tuple[Path, Path]:
    model = shutil.copytree(tiny_bi_encoder, tmp_path / "custom-code-model")
    marker = tmp_path / "code-was-run"
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="custom-bert", auto_map={"AutoConfig": "custom.Config", "AutoModel": "custom.Model"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "custom.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    return model, marker


def test_model_code_is_not_run_by_default(tmp_path, tiny_bi_encoder, tiny_cross_encoder):
    model, marker = _model_with_own_code(tmp_path, tiny_bi_encoder)
    with pytest.raises(ModelNotAvailableError, match=r"ships its own Python code, which is not run unless the "
                                                     r"config sets trust_remote_code: true"):
        Encoder(str(model))
    cross = shutil.copytree(tiny_cross_encoder, tmp_path / "custom-cross")
    shutil.copy(model / "config.json", cross / "config.json")
    shutil.copy(model / "custom.py", cross / "custom.py")
    with pytest.raises(ModelNotAvailableError, match=r"ships its own Python code"):
        CrossEncoderReranker(str(cross))
    assert not marker.exists()


def test_trust_remote_code_only_when_the_config_says_so(monkeypatch, sample_index, tiny_bi_encoder,
                                                        tiny_cross_encoder):
    import index.dense
    import rerank.cross_encoder

    seen: list[tuple[str, bool]] = []

    def spy(original):
        def load(name, kind, loader, **kwargs):
            seen.append((kind, kwargs["trust_remote_code"]))
            return original(name, kind, loader, **kwargs)
        return load

    monkeypatch.setattr(index.dense, "load_model", spy(index.dense.load_model))
    monkeypatch.setattr(rerank.cross_encoder, "load_model", spy(rerank.cross_encoder.load_model))
    config = pipeline_config(sample_index, tiny_bi_encoder)
    config["rerank"] = {"model": str(tiny_cross_encoder)}
    SearchPipeline.from_config(config)
    assert seen == [("bi-encoder", False), ("cross-encoder", False)]
    config["first_stage"]["dense"]["trust_remote_code"] = True
    config["rerank"]["trust_remote_code"] = True
    SearchPipeline.from_config(config)
    assert seen[2:] == [("bi-encoder", True), ("cross-encoder", True)]


# -- a manifest is checked strictly: its structure, and only plain names of files inside the index --------------

_ENTRY = {"sha256": "0" * 64, "bytes": 0}


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: {**m, "files": []}, r"files: Input should be a valid dictionary"),
    (lambda m: {**m, "files": None}, r"files: Input should be a valid dictionary"),
    (lambda m: {**m, "files": {**m["files"], "documents.sqlite": {}}},
     r"files\['documents.sqlite'\]\['sha256'\]: Field required \(and 1 more\)"),
    (lambda m: {**m, "files": {**m["files"], "bm25.npz": {**m["files"]["bm25.npz"], "bytes": True}}},
     r"files\['bm25.npz'\]\['bytes'\]: Input should be a valid integer"),
    (lambda m: {**m, "files": {**m["files"], "bm25.npz": {**m["files"]["bm25.npz"], "sha256": "x"}}},
     r"files\['bm25.npz'\]\['sha256'\]: String should match pattern"),
    (lambda m: {**m, "format_version": -1}, r"format_version: Input should be greater than or equal to 1"),
    (lambda m: {**m, "format_version": True}, r"format_version: Input should be a valid integer"),
    (lambda m: {**m, "format_version": 1.0}, r"format_version: Input should be a valid integer"),
    (lambda m: {**m, "components": "bm25"}, r"components: Input should be a valid list"),
    (lambda m: {**m, "components": ["bm25", "sparse"]}, r"components\['1'\]: Input should be 'bm25' or 'dense'"),
    (lambda m: {k: v for k, v in m.items() if k != "embedding_dim"}, r"the dense component needs embedding_dim"),
    (lambda m: {**m, "embedding_dim": True}, r"embedding_dim: Input should be a valid integer"),
], ids=["files-list", "files-null", "empty-entry", "bool-size", "bad-sha256", "negative-format", "bool-format",
        "float-format", "components-string", "unknown-component", "no-embedding-dim", "bool-embedding-dim"])
def test_manifest_of_the_wrong_shape(index_copy, edit, message):
    _write_manifest(index_copy, edit(_manifest(index_copy)))
    for verify in (True, False):
        with pytest.raises(IndexDirError, match=rf"manifest.json is not a valid index manifest \({message}.*\); it "
                                                rf"was not written by this library or was edited; {REBUILD}"):
            IndexDirectory.load(index_copy, verify=verify)


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "sub/bm25.npz", "..", ".hidden", "", "a\x00b",
                                  "bm25.npz\n", "manifest.json", "ﬁle"])
def test_manifest_entry_that_is_not_a_plain_name_in_the_index(tmp_path, index_copy, name):
    """Even with the true size and sha256 of the file it points at, nothing outside the index is read, and a wrong
    size cannot reveal the size of a file outside the index."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret" * 1234)
    manifest = _manifest(index_copy)
    for entry in ({"sha256": sha256_file(outside), "bytes": outside.stat().st_size}, {**_ENTRY, "bytes": 1}):
        _write_manifest(index_copy, {**manifest, "files": {**manifest["files"], name: entry}})
        with pytest.raises(IndexDirError, match=r"is not a plain file name inside the index") as caught:
            IndexDirectory.load(index_copy)
        assert str(outside.stat().st_size) not in str(caught.value)


@pytest.mark.parametrize("name", FILES)
def test_file_left_out_of_the_manifest_is_refused(index_copy, name):
    """A file the index needs but the manifest does not list would be loaded unchecked: refused instead."""
    manifest = _manifest(index_copy)
    del manifest["files"][name]
    _write_manifest(index_copy, manifest)
    with pytest.raises(IndexDirError, match=rf"manifest.json does not list {name}, which the \w+ component needs; it "
                                            rf"was not written by this library or was edited; {REBUILD}"):
        IndexDirectory.load(index_copy)


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_listed_file_that_is_not_a_regular_file_of_the_index(tmp_path, index_copy, kind):
    """A link to an identical copy outside the index (sha256 and size match) is still not read; a FIFO does not
    block the load."""
    name = "bm25.npz"
    outside = shutil.copy(index_copy / name, tmp_path / "copy-outside")
    (index_copy / name).unlink()
    if kind == "symlink":
        (index_copy / name).symlink_to(outside)
        message = rf"{name} is a symbolic link; an index holds only its own files; {REBUILD}"
    else:
        (index_copy / name).mkdir() if kind == "directory" else os.mkfifo(index_copy / name)
        message = rf"{name} is not a regular file; {REBUILD}"
    with pytest.raises(IndexDirError, match=message):
        IndexDirectory.load(index_copy)


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2) | st.floats(allow_nan=False) |
                     st.sampled_from(["", "bm25", "dense", "../x", "/etc/passwd", "bm25.npz", "0" * 64]),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                         st.sampled_from(["sha256", "bytes", "bm25.npz", "documents.sqlite", "../x", "k"]), inner,
                         max_size=3), max_leaves=8)


@pytest.fixture(scope="module")
def bm25_index(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bm25") / "idx"
    build_index(SAMPLE_CORPUS, path, bm25_only(), show_progress=False)
    return path


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["format_version", "files", "components", "config", "embedding_dim", "bm25.npz",
                            "documents.sqlite"]), value=_JSON)
def test_any_manifest_value_loads_or_is_refused_in_one_line(bm25_index, key, value):
    """Whatever JSON a field (or a file entry) holds, the load either succeeds or raises IndexDirError."""
    original = (bm25_index / MANIFEST_FILE).read_bytes()
    manifest = json.loads(original)
    if key in manifest["files"]:
        manifest["files"][key] = value
    else:
        manifest[key] = value
    _write_manifest(bm25_index, manifest)
    try:
        IndexDirectory.load(bm25_index)
    except IndexDirError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 800
    finally:
        (bm25_index / MANIFEST_FILE).write_bytes(original)


def test_index_built_before_metadata_columns_still_loads_and_filters(index_copy):
    """Neither metadata-column file listed (an index from before they existed): the columns are made from the
    store on first use."""
    manifest = _manifest(index_copy)
    for name in ("fields.npz", "fields.json"):
        del manifest["files"][name]
        (index_copy / name).unlink()
    _write_manifest(index_copy, manifest)
    index = IndexDirectory.load(index_copy)
    assert index.filter_mask({"doc_id": "tides"}).sum() == 1
