"""Labelled data-set export: ``python -m simulation export`` (see ``docs/export.md``).

:mod:`simulation.export.dataset` is pure (plans, columns, numpy batches); the I/O shell,
:mod:`simulation.export.runner` (Arrow, Parquet/CSV writers, worker processes and threads,
wall-clock timing) and :mod:`simulation.export.cli`, is imported only by the command, so
``import simulation`` needs neither pyarrow nor tqdm.
"""

from simulation.export.dataset import (
    ColumnSpec,
    ExportPlan,
    ExportPlanError,
    TypeBatch,
    iter_type_batches,
    make_plan,
    parse_duration,
    synthetic_fleet,
    type_columns,
)

__all__ = [
    "ColumnSpec",
    "ExportPlan",
    "ExportPlanError",
    "TypeBatch",
    "iter_type_batches",
    "make_plan",
    "parse_duration",
    "synthetic_fleet",
    "type_columns",
]
