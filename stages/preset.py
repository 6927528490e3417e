"""Applies a preset: merges ``presets/NAME.yaml`` into ``params.yaml``, comments kept.

A preset is a partial params file holding only the settings that differ from the
defaults (the service names the preset a version serves, ``lib/service/knobs.py``).
Each ``key: value`` line of ``params.yaml`` that the preset names gets the preset's
value and keeps its comment; a setting the file lacks is added under its section. The
result is validated like every params file before it replaces ``params.yaml``; then
``dvc repro`` builds it. The equivalent experiment, leaving ``params.yaml`` as it is,
is printed too (``dvc exp run -S ...``).

Usage::

    python stages/preset.py presets/recommended.yaml [--params params.yaml] [--print]
"""
import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# pylint: disable=wrong-import-position
from lib import cli
from lib.artifacts import atomic_path
from lib.config import Config, parse_yaml
from lib.errors import InputError

Settings = List[Tuple[str, str, object]]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses the command line."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", type=Path, help="the preset, e.g. presets/recommended.yaml")
    parser.add_argument("--print", action="store_true", dest="print_only",
                        help="only print the equivalent dvc exp run line")
    return parser.parse_args(argv)


def read_settings(path: Path) -> Settings:
    """The (section, key, value) settings of a preset file, checked against the config."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"preset {path} cannot be read: {err}") from None
    data = parse_yaml(text, str(path)) or {}
    Config.from_dict(data, str(path), missing_sections=True)     # ConfigError if not valid
    return [(section, key, value) for section, values in data.items()
            for key, value in values.items()]


def scalar(value: object) -> str:
    """A value as YAML writes it on one line (``crop``, ``320``, ``3.0``)."""
    return yaml.safe_dump([value], default_flow_style=True).strip()[1:-1]


def merge(text: str, settings: Settings) -> str:
    """``params.yaml`` text with each setting's line set (comment kept) or added."""
    lines = text.splitlines()
    for section, key, value in settings:
        start = next((i for i, line in enumerate(lines) if line.startswith(f"{section}:")), None)
        if start is None:
            lines += ["", f"{section}:"]
            start = len(lines) - 1
        end = next((i for i in range(start + 1, len(lines))
                    if lines[i] and not lines[i][0].isspace()), len(lines))
        pattern = re.compile(rf"^  {re.escape(key)}:(\s*[^#]*?)(\s*#.*)?$")
        found = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
        line = f"  {key}: {scalar(value)}"
        if found is None:
            lines.insert(start + 1, line)
            continue
        comment = pattern.match(lines[found]).group(2)
        if comment:
            column = len(lines[found]) - len(comment.lstrip())
            line = line.ljust(column - 1) + " " + comment.lstrip()
        lines[found] = line
    return "\n".join(lines) + "\n"


def experiment_line(settings: Settings) -> str:
    """The ``dvc exp run`` command that builds the same settings as an experiment."""
    return "dvc exp run " + " ".join(f"-S {section}.{key}={scalar(value)}"
                                     for section, key, value in settings)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Merges the preset into the params file (or prints the experiment line)."""
    args = parse_args(argv)
    cli.setup_logging(args.verbose)
    settings = read_settings(args.preset)
    if not args.print_only:
        merged = merge(args.params.read_text(encoding="utf-8"), settings)
        Config.from_dict(parse_yaml(merged, str(args.params)), str(args.params))
        with atomic_path(args.params, suffix=".yaml") as tmp:
            tmp.write_text(merged, encoding="utf-8")
        changed: Dict[str, str] = {f"{s}.{k}": scalar(v) for s, k, v in settings}
        print(f"{args.params}: " + ", ".join(f"{k}={v}" for k, v in changed.items())
              + "; now run dvc repro")
    print(f"as an experiment: {experiment_line(settings)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
