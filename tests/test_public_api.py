"""What a user sees first: ``dir(dsprobe)`` and ``dsprobe --help``."""

from __future__ import annotations

import re
from pathlib import Path

import dsprobe
from dsprobe.cli import COMMANDS, DESCRIPTION

README = Path(__file__).resolve().parent.parent / "README.md"


def test_dir_lists_every_lazy_export_and_each_resolves():
    listed = set(dir(dsprobe))
    missing = [name for name in dsprobe.__all__ if name not in listed]
    assert not missing, f"dir(dsprobe) leaves out {missing}"
    for name in dsprobe.__all__:
        assert getattr(dsprobe, name) is not None, name


def test_help_lists_the_commands_as_the_readme_does():
    """The README's Commands table and ``dsprobe --help`` name the same commands in the same order."""
    table = README.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    readme_commands = re.findall(r"^\| `dsprobe ([\w-]+)", table, re.M)
    assert readme_commands == list(COMMANDS)
    assert DESCRIPTION.endswith(".")
