"""The proxy benchmark: a table of architectures trained under a grid of proxy settings and a reference
(:mod:`~pyaccel_nas.bench.build`, :mod:`~pyaccel_nas.bench.table`), from which the proxies' rank consistency
is measured and search strategies are compared over many seeds at the cost of a table look-up."""

from pyaccel_nas.bench.table import BenchTable, TableError, load_table

__all__ = ["BenchTable", "TableError", "load_table"]
