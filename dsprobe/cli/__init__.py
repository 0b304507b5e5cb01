"""``dsprobe`` command line. Each subcommand lives in the module that does the work and provides
``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
import sys

DESCRIPTION = (
    "Record DeepStream tensor output, replay and tune its postprocess, export it back live."
)

# name -> (module, one-line help), in the order of a first session (README.md, Commands)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": (
        "dsprobe.cli.doctor",
        "check GIE configs (and the device's Python) for settings that break recording",
    ),
    "inspect": ("dsprobe.cli.inspect", "print what a recording holds"),
    "record-onnx": (
        "dsprobe.cli.record_onnx",
        "record videos through an ONNX model as nvinfer would",
    ),
    "compare": (
        "dsprobe.cli.compare",
        "drift between two recordings, layer by layer and box by box",
    ),
    "export-nvinfer": (
        "dsprobe.cli.export_nvinfer",
        "print the nvinfer [class-attrs-*] keys of a postprocess spec",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsprobe", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"dsprobe {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    argv = sys.argv[1:] if argv is None else argv
    args, _ = parser.parse_known_args(argv[:1] if argv else argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    cmd_parser = argparse.ArgumentParser(
        prog=f"dsprobe {args.command}", description=COMMANDS[args.command][1]
    )
    module.add_arguments(cmd_parser)
    return int(module.run(cmd_parser.parse_args(argv[1:])) or 0)


def _version() -> str:
    from dsprobe import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
