"""`twostage train-reranker` as a script (same options and output): retrieval/commands/train_reranker.py."""

from retrieval import cli
from retrieval.commands import train_reranker

if __name__ == "__main__":
    cli.script(train_reranker)
