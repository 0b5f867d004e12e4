"""`twostage bench` as a script (same options and output): retrieval/commands/benchmark.py."""

from retrieval import cli
from retrieval.commands import benchmark

if __name__ == "__main__":
    cli.script(benchmark)
