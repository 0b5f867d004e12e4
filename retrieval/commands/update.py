"""`twostage update`: add, replace and delete documents of a built index in place, as one atomic commit (only the
new documents are encoded), and `--merge` its segments into one."""

from __future__ import annotations

import argparse
from pathlib import Path

from retrieval import cli

SUMMARY = "Add, replace (upsert) or delete documents of an index in place; --merge folds its segments."
EXAMPLES = ("--index /tmp/idx/sample --add new_docs.jsonl",
            "--index /tmp/idx/sample --upsert edited.jsonl --delete-ids gone.txt",
            "--index /tmp/idx/sample --merge")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", required=True, help="index directory (built by twostage build)")
    p.add_argument("--config", help="pipeline YAML whose build settings must equal the index's (default: the "
                                    "settings stored in the index)")
    p.add_argument("--add", metavar="PATH", help="new documents: any corpus the build reads (an id the index "
                                                 "holds is an error; use --upsert to replace)")
    p.add_argument("--upsert", metavar="PATH", help="documents to add or replace by id (any corpus format)")
    p.add_argument("--delete-ids", metavar="FILE", help="ids to delete, one per line")
    p.add_argument("--strict", action="store_true", help="an id in --delete-ids the index does not hold is an error")
    p.add_argument("--merge", action="store_true", help="after the changes (if any), fold every segment into one")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _check_paths(args: argparse.Namespace) -> None:
    # Before the lock and the index are opened; the corpus reader's own message would point at build's --corpus.
    for option, path, what in (("--add", args.add, "a corpus file or BEIR folder"),
                               ("--upsert", args.upsert, "a corpus file or BEIR folder"),
                               ("--delete-ids", args.delete_ids, "a text file of document ids, one per line")):
        if path is None:
            continue
        if not Path(path).exists():
            raise ValueError(f"{option} {path}: no such file or folder; give {what}")
        if option == "--delete-ids" and Path(path).is_dir():
            raise ValueError(f"--delete-ids {path} is a folder; give {what}")


def _ids(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def run(args: argparse.Namespace) -> int:
    from index.documents import read_corpus
    from index.sharded import is_sharded, read_layout
    from index.sharded_writer import open_writer
    from retrieval.config import load_config

    sharded = is_sharded(args.index)
    # A sharded index's writer finishes an interrupted update when it opens: that alone is something to do.
    if not (args.add or args.upsert or args.delete_ids or args.merge or sharded):
        raise ValueError("nothing to do: give --add PATH, --upsert PATH, --delete-ids FILE or --merge")
    _check_paths(args)
    deletes = _ids(args.delete_ids) if args.delete_ids else []  # read before taking the lock: a bad path fails fast
    build = None
    if args.config:
        from index.config import BuildConfig
        from index.manifest import read_manifest
        from retrieval.config import build_differences
        from retrieval.pipeline import _settings

        config = load_config(args.config)
        # The build settings alone (the writer loads and verifies the whole index next): no second full load.
        built = BuildConfig.model_validate(read_layout(args.index).manifest.config if sharded
                                           else read_manifest(Path(args.index), verify=False)["config"])
        differences = build_differences(config, built)
        if differences:
            raise ValueError(f"{args.index} was built with {_settings(differences, 1)} but the config has "
                             f"{_settings(differences, 2)}; an update must use the index's build settings (change "
                             "the config to the index's values, or rebuild)")
        build = config.build_config()
    with open_writer(args.index, build, show_progress=not args.quiet) as writer:
        corpus = writer.config.corpus
        if args.add:
            writer.add(read_corpus(args.add, corpus))
        if args.upsert:
            writer.upsert(read_corpus(args.upsert, corpus))
        if deletes:
            writer.delete(deletes, strict=args.strict)
        report = writer.commit()
        merged = writer.merge() if args.merge else None
    rows = [report.to_dict()] + ([merged.to_dict()] if merged is not None else [])
    if args.json:
        cli.print_json(rows[0] if merged is None else {"update": rows[0], "merge": rows[1]})
        return 0
    print(f"index      {report.path}")
    print(f"added      {report.added:,}")
    print(f"replaced   {report.replaced:,}")
    print(f"deleted    {report.deleted:,}" + (f"  ({report.unknown:,} ids not in the index, skipped)"
                                              if report.unknown else ""))
    if report.skipped_empty:
        print(f"skipped    {report.skipped_empty:,} documents with no title and no text")
    final = merged or report
    print(f"commit     {final.generation}  ({final.segments} segment{'s' if final.segments != 1 else ''}, "
          f"{final.documents:,} documents, {final.passages:,} passages)")
    print(f"seconds    {report.seconds + (merged.seconds if merged else 0):.2f}")
    phases = {**report.phases, **({f"merge.{k}": v for k, v in merged.phases.items()} if merged else {})}
    width = max(map(len, phases), default=0)
    for phase, seconds in phases.items():
        print(f"  {phase:<{width}}  {seconds:>8.2f}")
    for advice in final.advice:
        print(f"note: {advice}")
    return 0
