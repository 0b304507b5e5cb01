"""``dsprobe doctor CONFIG [CONFIG...]``: every setting that would make recording or the live
postprocess fail or lie, each with its fix.

Reads the GIE configs (nvinfer key files, YAML, or nvinferserver protobuf text) and, where it runs,
the Python side of the device (pyds and numpy versions, Jetson or dGPU). Exit status 1 when any
finding is an error, else 0. The checks are :func:`dsprobe.deepstream.config_findings` (also run
by the probes when they are attached) plus cross-GIE ones (``operate-on-gie-id``).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from dsprobe.deepstream.checks import (
    ERROR,
    INFO,
    Finding,
    config_findings,
    pipeline_findings,
    platform_findings,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "configs", nargs="+", metavar="CONFIG", help="nvinfer / nvinferserver config files"
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="the configs feed attach_postprocess (also check network-type=100)",
    )
    parser.add_argument("--no-platform", action="store_true", help="skip the pyds / numpy checks")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def diagnose(paths: list[str], live: bool = False, platform: bool = True) -> list[Finding]:
    """The findings for the config files ``paths`` (and this machine's Python if ``platform``)."""
    from dsprobe.nvinfer.config import load_nvinfer_config

    found: list[Finding] = []
    configs: dict[int, Any] = {}
    for path in paths:
        try:
            cfg = load_nvinfer_config(path)
        except Exception as exc:
            found.append(
                Finding(ERROR, path, "", "", f"cannot read the config: {exc}", "fix the file")
            )
            continue
        if cfg.gie_unique_id in configs:
            other = configs[cfg.gie_unique_id].path
            found.append(
                Finding(
                    ERROR,
                    path,
                    "gie-unique-id",
                    str(cfg.gie_unique_id),
                    f"{other} has the same gie-unique-id: their tensors and objects cannot be told apart",
                    "give every GIE its own gie-unique-id",
                )
            )
        configs[cfg.gie_unique_id] = cfg
        found += config_findings(cfg, live=live)
    found += pipeline_findings(configs)
    if platform:
        found += _platform()
    return found


def _platform() -> list[Finding]:
    import numpy as np

    from dsprobe.deepstream.surface import is_jetson

    try:
        import pyds

        version = str(getattr(pyds, "__version__", "unknown"))
    except ImportError:
        version = None
    import platform as plat

    jetson = is_jetson()
    out = [
        Finding(
            INFO,
            "python",
            "platform",
            f"{plat.machine()} {'Jetson' if jetson else 'dGPU/x86'}",
            f"pyds {version or 'missing'}, numpy {np.__version__}, Python {plat.python_version()}",
            "nothing to fix: what the checks below assume",
        )
    ]
    out += platform_findings(version, np.__version__)
    if not jetson:
        out.append(
            Finding(
                INFO,
                "pipeline",
                "nvbuf-memory-type",
                "",
                "on dGPU the probe reads frame pixels only from CUDA unified (3) or pinned (1) memory; "
                "it checks the element before the probe and otherwise records tensors without images",
                "set nvbuf-memory-type=3 on nvstreammux and on the RGBA nvvideoconvert before the probe "
                "(1 = pinned on WSL)",
            )
        )
    return out


def run(args: argparse.Namespace) -> int:
    found = diagnose(args.configs, live=args.live, platform=not args.no_platform)
    if args.json:
        print(json.dumps([asdict(f) for f in found], indent=2))
    else:
        for f in found:
            print(f)
        n_err = sum(f.level == ERROR for f in found)
        print(f"{len(found)} finding(s), {n_err} error(s) in {len(args.configs)} config(s)")
    return 1 if any(f.level == ERROR for f in found) else 0
