"""``python -m server export``: the I/O shell of the data-set export (see ``docs/export.md``).

:mod:`simulation.export.dataset` is the pure half (plans, columns, numpy batches); here are
the Arrow conversion, the Parquet/CSV writers, the worker processes and threads, the timing
(:mod:`server.export.runner`) and the command line (:mod:`server.export.cli`). Neither is
imported by the server itself, so running the server needs neither pyarrow nor tqdm.
"""
