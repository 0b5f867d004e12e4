"""`twostage build` as a script (same options and output): retrieval/commands/build.py."""

from retrieval import cli
from retrieval.commands import build

if __name__ == "__main__":
    cli.script(build)
