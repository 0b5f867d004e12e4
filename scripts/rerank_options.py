"""`twostage rerank-options` as a script (same options and output): retrieval/commands/rerank_options.py."""

from retrieval import cli
from retrieval.commands import rerank_options

if __name__ == "__main__":
    cli.script(rerank_options)
