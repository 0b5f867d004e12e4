"""`twostage serve` as a script (same options): retrieval/commands/serve.py."""

from retrieval import cli
from retrieval.commands import serve

if __name__ == "__main__":
    cli.script(serve)
