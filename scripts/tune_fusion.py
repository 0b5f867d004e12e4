"""`twostage tune-fusion` as a script (same options and output): retrieval/commands/tune_fusion.py."""

from retrieval import cli
from retrieval.commands import tune_fusion

if __name__ == "__main__":
    cli.script(tune_fusion)
