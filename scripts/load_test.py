"""`twostage load-test` as a script (same options and output): retrieval/commands/load_test.py."""

from retrieval import cli
from retrieval.commands import load_test

if __name__ == "__main__":
    cli.script(load_test)
