"""``dsprobe export-nvinfer SPEC``: print (or write) the nvinfer keys equivalent to a saved
postprocess spec, and what nvinfer cannot express (:func:`dsprobe.analysis.export.to_nvinfer`)."""

from __future__ import annotations

import argparse
import sys

from dsprobe.analysis.export import to_nvinfer
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="postprocess spec (JSON) saved by Postprocess.save")
    p.add_argument("-o", "--output", help="write the keys to this file instead of printing them")


def run(args: argparse.Namespace) -> int:
    try:
        exp = to_nvinfer(Postprocess.load(args.spec))
    except (PostprocessError, ValueError) as exc:  # a bad spec, or a value nvinfer would refuse
        print("dsprobe export-nvinfer: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(exp.text())
    else:
        print(exp.text(), end="")
    return 0
