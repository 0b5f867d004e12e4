"""`twostage update` as a script (same options and output): retrieval/commands/update.py."""

from retrieval import cli
from retrieval.commands import update

if __name__ == "__main__":
    cli.script(update)
