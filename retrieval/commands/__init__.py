"""One module per `twostage` subcommand (`build`, `update`, `search`, `evaluate`, `train_reranker`,
`tune_fusion`, `rerank_options`, `benchmark`, `demo`, `gpu_check`), each with `SUMMARY`, `EXAMPLES`,
`add_arguments(parser)` and `run(args) -> int`.

`retrieval.cli` puts them together as the `twostage` command; `scripts/<name>.py` runs one of them as a script.
Every module imports the heavy stack only inside `run`, so `twostage --help` and usage errors answer at once.
"""
