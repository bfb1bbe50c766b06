"""The project's benchmarks: each module measures one question and writes ``results/<name>.json``.

Run one from the repository root with ``python -m benchmarks.<name>``. Helpers shared between
benchmarks are public modules here: :mod:`benchmarks.provenance` (where a figure came from) and
:mod:`benchmarks.runs` (``bevdistill`` commands run as traced subprocesses, and their scores).
"""
