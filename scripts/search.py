"""`twostage search` as a script (same options and output): retrieval/commands/search.py."""

from retrieval import cli
from retrieval.commands import search

if __name__ == "__main__":
    cli.script(search)
