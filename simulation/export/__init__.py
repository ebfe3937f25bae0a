"""The pure half of the labelled data-set export (plans, columns, numpy batches).

The command, ``python -m server export``, and its I/O (Arrow, Parquet/CSV writers, worker
processes and threads, wall-clock timing) live in :mod:`server.export` (``docs/export.md``).
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
