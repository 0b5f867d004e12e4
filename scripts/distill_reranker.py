"""`twostage distill-reranker` as a script (same options and output): retrieval/commands/distill_reranker.py."""

from retrieval import cli
from retrieval.commands import distill_reranker

if __name__ == "__main__":
    cli.script(distill_reranker)
