"""``../shared/device/gpu-check.sh`` (the prepared run for a lent GPU machine) against the code: every
``batchaug`` command it runs parses with the CLI and its configuration overrides resolve, every bench
it calls has the flags it passes, and the JSON keys its summary reads are still written. Nothing runs
on a device here; the script itself runs on the GPU machine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from batchaug.cli import build_parser, parse_args

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO.parent / "shared" / "device" / "gpu-check.sh"
SRC = REPO / "src" / "batchaug"


@pytest.fixture(scope="module")
def script() -> str:
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} not found beside the checkout")
    return SCRIPT.read_text()


def _commands(text: str) -> list[list[str]]:
    """Every ``batchaug ...`` command of the script, variables expanded, as argv lists."""
    vars_ = dict(re.findall(r'^(\w+)="(batchaug [^"]*)"', text, flags=re.M))
    out = []
    for line in text.replace("\\\n", " ").splitlines():  # continued lines joined
        if line.lstrip().startswith("#") or re.match(r'^\w+="batchaug', line):
            continue
        for cmd in re.findall(r'"([^"]*(?:batchaug |\$TRAIN|\$SHORT)[^"]*)"', line):
            for name, value in vars_.items():
                cmd = cmd.replace(f"${name}", value)
            cmd = cmd.split(">")[0].split("&&")[0].replace("'$OUT", "'/tmp/out").strip()
            if not cmd.startswith("batchaug "):
                continue
            argv = shlex.split(cmd)[1:]
            if argv[:2] == ["bench", "$1"]:  # the bench() helper: expanded per call below
                out += [["bench", name, *argv[2:]] for name in re.findall(r"^bench (\w+) \d+$", text, flags=re.M)]
            else:
                out.append(argv)
    return out


def test_every_command_parses_and_its_overrides_resolve(script: str) -> None:
    from batchaug.config import load_config

    commands = _commands(script)
    kinds = {tuple(argv[:2]) if argv[0] == "bench" else (argv[0],) for argv in commands}
    assert kinds >= {("train",), ("eval",), ("bench", "step"), ("bench", "sba"), ("bench", "augment")}
    parser = build_parser()
    for argv in commands:
        args = parse_args(parser, argv)  # argparse exits (SystemExit) on an unknown flag
        if argv[0] == "train":
            cfg = load_config(str(REPO / args.config), list(args.overrides))  # ConfigError on a bad key/value
            assert cfg.train.device == "cuda"


def test_the_summary_reads_keys_the_code_writes(script: str) -> None:
    notes = script[script.index("<<'PY'"):script.index("\nPY\n")]
    keys = set(re.findall(r"\[['\"](\w+)['\"]\]", notes)) - {"32"}
    source = "\n".join(p.read_text() for p in SRC.rglob("*.py"))
    for key in keys:  # f-string keys such as ba_over_plain_m{m_time}: their literal prefix
        assert key in source or re.sub(r"\d+$", "", key) + "{" in source, f"gpu-check.sh reads {key!r}"
