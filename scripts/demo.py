"""`twostage demo` as a script (same options and output): retrieval/commands/demo.py."""

from retrieval import cli
from retrieval.commands import demo

if __name__ == "__main__":
    cli.script(demo)
