"""Figures and tables from run directories (``batchaug report``).

:func:`build_report` reads run and sweep directories and writes ``table.md``, ``report.md`` and
``plots/``; :func:`load_runs` and :func:`group_runs` are its reading and grouping steps. Nothing here
imports torch: a report reads only the files of the run-directory contract.
"""

from batchaug.report.build import Report, build_report
from batchaug.report.groups import RunGroup, group_runs
from batchaug.report.rundirs import RunDir, load_run, load_runs

__all__ = ["Report", "RunDir", "RunGroup", "build_report", "group_runs", "load_run", "load_runs"]
