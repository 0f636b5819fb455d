"""List the paper configs: every configs/paper/*.yaml with the published row it reproduces, the
numbers the paper prints for it and the command that runs it (read from each file's paper: block).

  batchaug configs                          one line per row, then the command
  batchaug configs --paper sba              one paper's rows (ba, sba, splitbn)
  batchaug configs --json                   a JSON list: every row with its values, sources, and a
                                            command for each of its columns (runs)
  batchaug configs --papers ../shared/papers
                                            also check that every quote is on its line of the papers'
                                            text; exits 1 when one is not
  batchaug configs path/to/configs          another folder of configs (default: configs/paper)

A file that is no row of its paper is listed as "extra, not a row". Reads the YAML files only: no
model, data or torch is loaded.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from batchaug.errors import ConfigError

DEFAULT_DIR = Path("configs/paper")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR,
                        help=f"folder of YAML configs (default: {DEFAULT_DIR})")
    parser.add_argument("--paper", choices=("ba", "sba", "splitbn"), default=None, help="only this paper's configs")
    parser.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    parser.add_argument("--papers", type=Path, default=None, metavar="DIR",
                        help="folder of the papers' texts: check every quote against its line (exit 1 if one fails)")


def _header_command(path: Path) -> list[str] | None:
    """The arguments of the first ``batchaug train <this file>`` command of the file's header comment."""
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("batchaug train ") and path.name in text and not text.endswith("\\"):
            try:
                return shlex.split(text)[2:]
            except ValueError:
                return None
    return None


def _command(config: str, overrides: list[str], out: str) -> str:
    return " ".join(["batchaug", "train", config, *(shlex.quote(o) for o in overrides), "--out", out])


def paper_rows(folder: Path, paper: str | None = None) -> list[dict[str, Any]]:
    """One dict per published row of every config in ``folder`` (``extra`` files: one row each)."""
    import yaml

    from batchaug.papers import PAPERS, PaperRef
    from batchaug.schema import build

    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of configs (run from the repository root, or give the folder)")
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
        block = raw.get("paper") if isinstance(raw, dict) else None
        if block is None:
            continue
        ref = build(PaperRef, block, f"{path.name}: paper")
        if paper is not None and ref.paper != paper:
            continue
        config = str(path) if path.is_absolute() else path.as_posix()
        header = _header_command(path) or [config, "--out", f"runs/{path.stem}"]
        # overrides the header's own command needs on every column (e.g. data.root for ImageNet)
        common = [t for t in header[1:] if "=" in t and not t.startswith("-")]
        base = {"file": path.name, "paper": ref.paper, "citation": PAPERS[ref.paper].citation,
                "regime": dict(ref.regime), "command": _command(config, common, f"runs/{path.stem}")}
        if ref.extra:
            rows.append({**base, "table": ref.table, "row": None, "extra": True, "unit": None, "values": {},
                         "compare": None, "suite": None, "mode": None, "note": ref.note, "runs": {},
                         "source": [vars(s) for s in ref.source]})
            continue
        for row in ref.rows():
            runs = {name: _command(config, common + list(overrides),
                                   f"runs/{path.stem}" + (f"_{name}" if overrides else ""))
                    for name, overrides in row.runs.items()}
            rows.append({**base, "table": row.table, "row": row.row, "extra": False, "unit": row.unit,
                         "values": dict(row.values), "compare": row.compare, "suite": row.suite, "mode": row.mode,
                         "note": row.note, "runs": runs, "source": [vars(s) for s in row.source]})
    return rows


def _published(row: dict[str, Any]) -> str:
    if row["extra"]:
        return "extra, not a row"
    if not row["values"]:
        return "(figure: no numbers)"
    return ", ".join(f"{k} {v:g}" for k, v in row["values"].items())


def run(args: argparse.Namespace) -> int:
    rows = paper_rows(args.folder, args.paper)
    problems: list[str] = []
    if args.papers is not None:
        import yaml

        from batchaug.papers import PaperRef, verify_sources
        from batchaug.schema import build

        if not args.papers.is_dir():
            raise ConfigError(f"--papers {args.papers}: not a folder")
        refs = []
        for path in sorted(args.folder.glob("*.yaml")):
            block = (yaml.safe_load(path.read_text()) or {}).get("paper")
            if block is not None:
                refs.append(build(PaperRef, block, f"{path.name}: paper"))
        problems = verify_sources(refs, args.papers)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        widths = {k: max([len(k)] + [len(str(r[k] or "")) for r in rows]) for k in ("file", "paper", "table")}
        print(f"{'file':<{widths['file']}}  {'paper':<{widths['paper']}}  {'table':<{widths['table']}}  "
              "row: published numbers")
        for r in rows:
            what = f"{r['row']}: {_published(r)}" if not r["extra"] else _published(r)
            if r["unit"] and r["values"]:
                what += f"  [{r['unit']}]"
            print(f"{r['file']:<{widths['file']}}  {r['paper']:<{widths['paper']}}  "
                  f"{r['table'] or '':<{widths['table']}}  {what}")
            suite = ""
            if r["suite"]:
                suite = f"  (then the {r['suite']} suite" + (f", mode {r['mode']})" if r["mode"] else ")")
            print(f"    {r['command']}{suite}")
        files = len({r["file"] for r in rows})
        print(f"{files} configs, {sum(not r['extra'] for r in rows)} published rows and figures, "
              f"{sum(r['extra'] for r in rows)} extra; --json adds a command per column")
    for p in problems:
        print(f"batchaug configs: {p}", file=sys.stderr)
    return 1 if problems else 0
