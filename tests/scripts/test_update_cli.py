"""`twostage update` end to end: add, upsert and delete from files, search sees each commit, `--json` counts, `--merge`
leaves one segment; bad input is one `error:` line, exit 2, no traceback, and the index unchanged (manifest bytes
equal). Also `twostage search --filter` errors: malformed JSON (where), an unknown field (the known ones), a range
on a text field.

The end-to-end flow runs the installed `twostage` as real processes; the error cases run `retrieval.cli.main`
in-process (the same code path after argv) to stay fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from index.builder import build_index
from index.directory import IndexDirectory
from index.lock import lock_path
from index.manifest import MANIFEST_FILE
from retrieval import cli
from retrieval.config import load_config
from tests.conftest import ROOT, SAMPLE_CORPUS
from tests.reliability import copy_index

TWOSTAGE = Path(sys.executable).parent / "twostage"
BM25_CONFIG = {"first_stage": {"dense": {"enabled": False}}}
ADDED = {"_id": "glaciers", "title": "Glaciers", "text": "Glaciers carve valleys as the ice moves downhill.",
         "source": "notes", "year": 2030}
UPSERTED = [{"_id": "tides", "title": "Tides", "text": "Volcanic ash clouds ground flights for days.",
             "source": "wiki", "year": 2031},
            {"_id": "deserts", "title": "Deserts", "text": "Sand dunes migrate with the prevailing wind.",
             "source": "wiki", "year": 2032}]
DELETED = ["coffee", "sleep"]
UNKNOWN = "no-such-doc"


def twostage(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(TWOSTAGE), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def twostage_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """`twostage ARGS` through `retrieval.cli.main`; returns (exit code, stdout, stderr)."""
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def _jsonl(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The sample corpus with metadata (source, year) built BM25-only as `twostage build` does, and the inputs."""
    tmp = tmp_path_factory.mktemp("update-cli")
    docs = [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()]
    for i, doc in enumerate(docs):
        doc.update(source=["notes", "wiki"][i % 2], year=2000 + i)
    f = {"tmp": tmp, "corpus": _jsonl(tmp / "corpus.jsonl", docs)}
    f["config"] = tmp / "bm25.yaml"
    f["config"].write_text(yaml.safe_dump(BM25_CONFIG))
    config = load_config(f["config"])
    build_index(f["corpus"], tmp / "base" / "idx", config.build_config(), show_progress=False,
                pipeline=config.stored())
    f["base"] = tmp / "base" / "idx"
    f["add"] = _jsonl(tmp / "add.jsonl", [ADDED])
    f["upsert"] = _jsonl(tmp / "upsert.jsonl", UPSERTED)
    f["delete"] = tmp / "delete.txt"
    f["delete"].write_text("\n".join([*DELETED, UNKNOWN]) + "\n")
    f["unknown"] = tmp / "unknown.txt"
    f["unknown"].write_text(f"{UNKNOWN}\nanother-unknown\n")
    f["exists"] = _jsonl(tmp / "exists.jsonl", [{"_id": "volcanoes", "text": "Again."}])
    f["dup"] = _jsonl(tmp / "dup.jsonl", [{"_id": "twice", "text": "One."}, {"_id": "twice", "text": "Two."}])
    # Configs whose build settings differ from the index's in one setting each.
    for name, config in (("stopwords", {"first_stage": {"dense": {"enabled": False},
                                                        "bm25": {"analyzer": {"stopwords": None}}}}),
                         ("chunking", {**BM25_CONFIG, "index": {"chunking": {"max_words": 12, "overlap": 2}}})):
        f[name] = tmp / f"{name}.yaml"
        f[name].write_text(yaml.safe_dump(config))
    return f


@pytest.fixture
def index(files, tmp_path) -> Path:
    return copy_index(files["base"], tmp_path / "idx")


def _listed(path: Path) -> set[str]:
    return set(json.loads((path / MANIFEST_FILE).read_text())["files"]) | {MANIFEST_FILE}


def _search(index: Path, *queries: str) -> dict[str, list[str]]:
    out = twostage("search", "--index", str(index), "--json", "--quiet", "--top-k", "30", *queries)
    assert out.returncode == 0, out.stderr
    return {row["query"]: [hit["doc_id"] for hit in row["results"]]
            for row in map(json.loads, out.stdout.splitlines())}


def test_add_upsert_delete_then_merge(files, index):
    out = twostage("update", "--index", str(index), "--add", str(files["add"]), "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {k: report[k] for k in ("added", "replaced", "deleted", "unknown", "generation", "segments", "documents",
                                   "merged")} == {"added": 1, "replaced": 0, "deleted": 0, "unknown": 0,
                                                  "generation": 1, "segments": 2, "documents": 25, "merged": False}

    out = twostage("update", "--index", str(index), "--upsert", str(files["upsert"]), "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["added"], report["replaced"], report["generation"], report["documents"]) == (1, 1, 2, 26)

    out = twostage("update", "--index", str(index), "--delete-ids", str(files["delete"]), "--quiet")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:4] == [f"index      {index}", "added      0", "replaced   0",
                         "deleted    2  (1 ids not in the index, skipped)"], out.stdout
    assert lines[4] == "commit     3  (3 segments, 24 documents, 24 passages)", out.stdout

    queries = ("glaciers carve valleys", "volcanic ash flights", "coffee beans", "how long should adults sleep",
               "sand dunes")
    found = _search(index, *queries)
    assert found["glaciers carve valleys"][0] == "glaciers"  # added
    assert found["volcanic ash flights"][0] == "tides"  # upserted: the new text is searched...
    assert found["sand dunes"][0] == "deserts"
    assert not set(DELETED) & {d for hits in found.values() for d in hits}  # deleted: never found
    assert set(os.listdir(index)) == _listed(index)  # superseded tombstones are gone

    out = twostage("update", "--index", str(index), "--merge", "--json", "--quiet")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {"update", "merge"}
    assert report["update"]["generation"] == 3  # nothing else to commit: no new generation
    merge = report["merge"]
    assert (merge["merged"], merge["segments"], merge["generation"], merge["documents"]) == (True, 1, 4, 24)
    loaded = IndexDirectory.load(index, verify=True)
    assert len(loaded.segments) == 1 and loaded.generation == 4
    assert set(os.listdir(index)) == _listed(index)  # the merged segments' files are gone
    assert _search(index, *queries) == found  # a merge changes no ranking
    assert not lock_path(index).exists()


def test_the_upserted_text_replaces_the_old_one(files, index, capsys):
    code, _, err = twostage_in_process(capsys, "update", "--index", str(index), "--upsert", str(files["upsert"]),
                                       "--quiet")
    assert code == 0, err
    code, out, err = twostage_in_process(capsys, "search", "--index", str(index), "--json", "--quiet", "neap")
    assert code == 0, err
    assert json.loads(out)["results"] == []  # only the old text of "tides" had the word


def test_filters_see_the_metadata_of_updated_documents(files, index, capsys):
    for option in ("--add", "--upsert"):
        code, _, err = twostage_in_process(capsys, "update", "--index", str(index), option, str(files[option[2:]]),
                                           "--quiet")
        assert code == 0, err
    code, out, err = twostage_in_process(capsys, "search", "--index", str(index), "--json", "--quiet", "--top-k",
                                         "30", "--filter", '{"year": {"gte": 2030}}', "glaciers ash dunes")
    assert code == 0, err
    assert sorted(hit["doc_id"] for hit in json.loads(out)["results"]) == ["deserts", "glaciers", "tides"]


def test_unknown_ids_are_counted_and_nothing_is_written(files, index, capsys):
    before = (index / MANIFEST_FILE).read_bytes()
    code, out, err = twostage_in_process(capsys, "update", "--index", str(index), "--delete-ids",
                                         str(files["unknown"]), "--json", "--quiet")
    assert code == 0, err
    report = json.loads(out)
    assert (report["deleted"], report["unknown"], report["generation"]) == (0, 2, 0)
    assert (index / MANIFEST_FILE).read_bytes() == before


# (case, command line with {placeholders} from `files` and {index}, what the message must say)
BAD = [
    ("add-existing-id", ["update", "--add", "{exists}"], "the index already holds document 'volcanoes'; use upsert"),
    ("duplicate-id-in-a-file", ["update", "--add", "{dup}"], "duplicate document id 'twice'"),
    ("duplicate-id-in-an-upsert", ["update", "--upsert", "{dup}"], "duplicate document id 'twice'"),
    ("unknown-ids-strict", ["update", "--add", "{add}", "--delete-ids", "{delete}", "--strict"],
     f"the index holds no document '{UNKNOWN}' (nothing was deleted); drop --strict"),
    ("config-other-stopwords", ["update", "--config", "{stopwords}", "--add", "{add}"],
     'built with first_stage.bm25.analyzer.stopwords: "english" but the config has '
     "first_stage.bm25.analyzer.stopwords: null"),
    ("config-other-chunking", ["update", "--config", "{chunking}", "--add", "{add}"],
     "built with index.chunking: null but the config has index.chunking: "),
    ("nothing-to-do", ["update"], "nothing to do: give --add PATH, --upsert PATH, --delete-ids FILE or --merge"),
    ("missing-add-path", ["update", "--add", "{tmp}/nope.jsonl"], "nope.jsonl: no such file or folder"),
    ("missing-delete-ids-file", ["update", "--delete-ids", "{tmp}/nope.txt"], "nope.txt: no such file"),
    ("filter-unknown-field", ["search", "--filter", '{{"sauce": "notes"}}', "ocean"],
     "filter['sauce']: no document has the field 'sauce'; known fields: doc_id, source, year"),
    ("filter-range-on-text", ["search", "--filter", '{{"source": {{"gte": 3}}}}', "ocean"],
     "filter['source']: field 'source' holds only text values; ranges need numbers"),
]


@pytest.mark.parametrize(("case", "args", "message"), BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_error_line_and_changes_nothing(files, index, capsys, case, args, message):
    before = (index / MANIFEST_FILE).read_bytes()
    listing = sorted(os.listdir(index.parent))
    command, *rest = args
    filled = [a.format(**{k: str(v) for k, v in files.items()}) for a in rest]
    code, out, err = twostage_in_process(capsys, command, "--index", str(index), "--quiet", *filled)
    assert (code, out) == (2, ""), err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert message in err, err
    assert (index / MANIFEST_FILE).read_bytes() == before
    assert sorted(os.listdir(index.parent)) == listing  # no segment, tombstone, temp folder or lock file left


def test_the_missing_path_message_names_the_option(files, index, capsys):
    code, _, err = twostage_in_process(capsys, "update", "--index", str(index), "--quiet", "--upsert",
                                       str(files["tmp"] / "nope.jsonl"))
    assert code == 2 and err.startswith(f"error: --upsert {files['tmp'] / 'nope.jsonl'}: no such file"), err
    assert "--corpus" not in err  # build's option; update has none


def test_malformed_filter_json_is_a_usage_error_saying_where(index, capsys):
    code, out, err = twostage_in_process(capsys, "search", "--index", str(index), "--quiet", "--filter",
                                         '{"source": ', "ocean")
    assert (code, out) == (2, ""), err
    assert "Traceback" not in err
    assert err.splitlines() == [err.splitlines()[0], "see: twostage search --help"], err
    assert err.startswith("error: argument --filter: filter is not valid JSON: Expecting value at line 1, column 12"
                          ", near '{\"source\": '"), err


def test_a_refused_update_as_a_shell_sees_it(files, index):
    before = (index / MANIFEST_FILE).read_bytes()
    out = twostage("update", "--index", str(index), "--quiet", "--add", str(files["exists"]))
    assert (out.returncode, out.stdout) == (2, ""), out.stderr
    assert out.stderr == ("error: add: the index already holds document 'volcanoes'; use upsert to replace "
                          "documents (nothing was changed)\n")
    assert (index / MANIFEST_FILE).read_bytes() == before
