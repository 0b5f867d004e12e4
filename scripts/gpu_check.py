"""`twostage gpu-check` as a script (same options and output): retrieval/commands/gpu_check.py."""

from retrieval import cli
from retrieval.commands import gpu_check

if __name__ == "__main__":
    cli.script(gpu_check)
