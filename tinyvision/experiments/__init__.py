"""Experiments: several runs under one directory (comparisons now; sweeps and tuning build on it)."""
from .compare import COMPARE_COLUMNS, compare, compare_row

__all__ = ["COMPARE_COLUMNS", "compare", "compare_row"]
