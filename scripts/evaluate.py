"""`twostage eval` as a script (same options and output): retrieval/commands/evaluate.py."""

from retrieval import cli
from retrieval.commands import evaluate

if __name__ == "__main__":
    cli.script(evaluate)
