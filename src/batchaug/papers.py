"""The ``paper:`` block of a config: which published table row (or figure) a run reproduces, the
numbers the paper prints for it, and the lines of the paper's text they come from.

A paper config (``configs/paper/*.yaml``) carries one block; the loader validates its shape and keeps
it in ``config.yaml``, and nothing in a run reads it (``batchaug configs`` lists the blocks, reports
compare runs with them). A block looks like::

    paper:
      paper: ba                     # a key of PAPERS
      table: Table 1
      row: ResNet44 + cutout, CIFAR-10
      unit: top-1 accuracy (%)
      values: {baseline: 93.7, ba: 95.27, m: 40}     # every cell of the row, as printed
      runs:                          # how to run each column: overrides on this file ([] = as written)
        ba: []
        baseline: ["method={name: baseline, policy: cutout}"]
      compare: final_test_acc        # the summary.json key that matches the config's column
      regime: {method.m: 40}         # settings the paper gives for this row: dotted config keys
      source:
        - {file: ba_hoffer2019_figures_table1.txt, line: 3, quote: "ResNet44 + cutout Cifar10 93.7% 95.27% (M=40)"}

Every number of ``values`` must be printed in one of the ``source`` quotes (checked when the block is
loaded), and :func:`verify_sources` checks that each quote is on its line of the paper's text
(``../shared/papers/``). A file that is not a table row says so with ``extra: true`` (no ``row``, no
values). ``also`` lists further rows the same run reproduces (e.g. the split-BN WRN-28-2 run is a row of
Tables 1 to 5); ``suite``/``mode`` say which evaluation of the run a row's numbers come from (Table 5's
corruption error is the ``corruptions`` suite of the run, in the ``main`` mode).

Imports nothing heavy: ``batchaug configs`` reads blocks without torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchaug.errors import ConfigError
from batchaug.schema import option

__all__ = ["PAPERS", "Paper", "PaperRef", "PaperRow", "PaperSource", "numbers_in", "verify_sources"]


@dataclass(frozen=True)
class Paper:
    """One of the papers batchaug reproduces, and the files of its text in ``../shared/papers/``."""

    key: str
    citation: str
    files: tuple[str, ...]


#: The papers a ``paper.paper`` key may name.
PAPERS: dict[str, Paper] = {p.key: p for p in (
    Paper("ba", "Hoffer, Ben-Nun, Hubara, Giladi, Hoefler & Soudry, \"Augment your batch: better training with "
          "larger batches\" (arXiv:1901.09335, 2019; CVPR 2020 as \"Augment Your Batch: Improving "
          "Generalization Through Instance Repetition\")",
          ("ba_hoffer2019_figures_table1.txt", "ba_hoffer2019_abstract_refs.txt")),
    Paper("sba", "Li, Hu, Qi, Qi, Ma & Zhang, \"Stochastic Batch Augmentation with An Effective Distilled "
          "Dynamic Soft Label Regularizer\" (arXiv:2006.15284, 2020)", ("sba_li_fulltext.txt",)),
    Paper("splitbn", "Merchant, Zoph & Cubuk, \"Does Data Augmentation Benefit from Split BatchNorms?\" "
          "(arXiv:2010.07810, 2020)", ("splitbn_merchant2020_fulltext.txt",)),
)}

# config sections a ``regime`` key may name (kept here so this module needs no config import)
_REGIME_SECTIONS = ("data", "model", "method", "optim", "train", "eval")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def numbers_in(text: str) -> list[float]:
    """Every number printed in ``text`` (``"93.7%"`` -> 93.7, ``"(M=40)"`` -> 40, ``"-1.6"`` -> -1.6)."""
    return [float(m) for m in _NUMBER.findall(text)]


def _squash(text: str) -> str:
    """Whitespace runs (tabs of an extracted table) as one space, for comparing quotes with the text."""
    return " ".join(text.split())


@dataclass
class PaperSource:
    """A line of a paper's text that a block's numbers come from."""

    file: str = ""
    """A file of the papers' texts (``../shared/papers/``), e.g. ``sba_li_fulltext.txt``."""
    line: int = option(1, ge=1)
    """Line number in that file (1-based)."""
    quote: str = ""
    """Text of that line (whitespace runs compare as one space); holds the numbers it supports."""

    def validate(self, prefix: str) -> None:
        if not self.file or "/" in self.file:
            raise ConfigError(f"{prefix}.file: give the name of a file in the papers' folder (e.g. "
                              f"sba_li_fulltext.txt), got {self.file!r}")
        if not self.quote.strip():
            raise ConfigError(f"{prefix}.quote: quote the text of {self.file} line {self.line} that the numbers "
                              "come from")


@dataclass
class PaperRow:
    """One published row (or figure) and its numbers; the fields a :class:`PaperRef` shares with it."""

    table: str | None = None
    """``Table 1``, ``Fig. 5``, ``§4.2``..."""
    row: str | None = None
    """The row as the table names it (network, dataset, augmentation)."""
    unit: str | None = None
    """What the accuracy-like values are, e.g. ``top-1 error (%)``."""
    values: dict[str, Any] = field(default_factory=dict)
    """Every cell of the row, by column name, as printed (percent stays percent)."""
    runs: dict[str, list[str]] = field(default_factory=dict)
    """Column name (a key of ``values``; for a figure without values, a curve's name) -> the ``key=value``
    overrides on this file that run that column (``[]``: the file as written)."""
    compare: str | None = None
    """The ``summary.json`` key comparable with the column this file runs as written."""
    suite: str | None = None
    """The evaluation suite of the run that the numbers come from (unset: training's own validation)."""
    mode: str | None = None
    """The method's evaluation mode of that suite (e.g. split BN ``main``)."""
    source: list[PaperSource] = field(default_factory=list)
    """The lines of the paper's text the numbers come from."""
    note: str | None = None
    """How the row was read (cells lost in extraction, interpretations)."""

    def validate(self, prefix: str) -> None:
        _check_row(self, prefix, extra=False)


@dataclass
class PaperRef:
    """The ``paper`` section of a config: the row it reproduces, its regime, and further rows."""

    paper: str = ""
    """The paper: a key of :data:`PAPERS` (``ba``, ``sba``, ``splitbn``)."""
    table: str | None = None
    row: str | None = None
    extra: bool = False
    """True for a file that is no row of the paper (no ``row``, no ``values``; ``note`` says why it exists)."""
    unit: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)
    compare: str | None = None
    suite: str | None = None
    mode: str | None = None
    regime: dict[str, Any] = field(default_factory=dict)
    """Settings the paper gives for this row, as dotted config keys (``method.m: 40``, ``train.epochs:
    200``); tests check that the file sets them."""
    source: list[PaperSource] = field(default_factory=list)
    note: str | None = None
    also: list[PaperRow] = field(default_factory=list)
    """Further rows (of this or another table) that the same run reproduces."""

    def validate(self, prefix: str) -> None:
        if self.paper not in PAPERS:
            raise ConfigError(f"{prefix}.paper: {self.paper!r} is not allowed; choose one of {', '.join(PAPERS)}")
        _check_row(self, prefix, extra=self.extra)
        for key, value in self.regime.items():
            section = str(key).split(".")[0]
            if not isinstance(key, str) or "." not in key or section not in _REGIME_SECTIONS:
                raise ConfigError(f"{prefix}.regime: {key!r} is not a dotted config key such as method.m or "
                                  f"train.epochs (sections: {', '.join(_REGIME_SECTIONS)})")
            if isinstance(value, Mapping):
                raise ConfigError(f"{prefix}.regime.{key}: give one value, got a mapping")

    def rows(self) -> list[PaperRow]:
        """The block's own row (unless ``extra``) followed by ``also``."""
        own = [] if self.extra else [PaperRow(self.table, self.row, self.unit, dict(self.values), dict(self.runs),
                                             self.compare, self.suite, self.mode, list(self.source), self.note)]
        return own + list(self.also)


def _check_row(row: PaperRow | PaperRef, prefix: str, *, extra: bool) -> None:
    if extra:
        if row.row is not None or row.values or row.runs or row.compare is not None:
            raise ConfigError(f"{prefix}: an extra file (extra: true) is no row of the paper: give it no row, "
                              "values, runs or compare, and say in note why it exists")
        if not row.note:
            raise ConfigError(f"{prefix}.note: say why this extra file (not a row of the paper) exists")
        return
    for key in ("table", "row"):
        if not getattr(row, key):
            raise ConfigError(f"{prefix}.{key}: name the {key} this file reproduces (or set extra: true)")
    if not row.source:
        raise ConfigError(f"{prefix}.source: give the line(s) of the paper's text the numbers come from")
    printed = [n for s in row.source for n in numbers_in(s.quote)]
    for name, value in row.values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{prefix}.values.{name}: expected a number as printed in the paper, got {value!r}")
        if not any(math.isclose(value, n, rel_tol=0, abs_tol=1e-9) for n in printed):
            raise ConfigError(f"{prefix}.values.{name}: {value} is not printed in any source quote of this row "
                              "(a published number comes with the line it is printed on)")
    for name, overrides in row.runs.items():
        if row.values and name not in row.values:  # a figure has no values: its runs name its curves
            raise ConfigError(f"{prefix}.runs.{name}: not a column of values ({', '.join(row.values) or 'none'})")
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(f"{prefix}.runs.{name}: expected a list of key=value overrides, got {overrides!r}")


def verify_sources(refs: Iterable[PaperRef], papers_dir: str | Path) -> list[str]:
    """Problems with the sources of ``refs``: each quote must be on its line of its file in ``papers_dir``
    (whitespace runs compared as one space). Returns messages; an empty list means all quotes were found."""
    papers_dir = Path(papers_dir)
    cache: dict[str, list[str]] = {}
    problems = []
    for ref in refs:
        groups = [(row.table, row.row, row.source) for row in ref.rows()]
        if ref.extra:
            groups.append((ref.table, "extra", ref.source))
        for table, name, sources in groups:
            for s in sources:
                if s.file not in cache:
                    path = papers_dir / s.file
                    cache[s.file] = path.read_text().splitlines() if path.is_file() else []
                lines = cache[s.file]
                where = f"{ref.paper} {table} {name!r}: {s.file}:{s.line}"
                if not lines:
                    problems.append(f"{where}: no such file in {papers_dir}")
                elif s.line > len(lines):
                    problems.append(f"{where}: the file has {len(lines)} lines")
                elif _squash(s.quote) not in _squash(lines[s.line - 1]):
                    problems.append(f"{where}: quote {s.quote!r} is not on that line")
    return problems
