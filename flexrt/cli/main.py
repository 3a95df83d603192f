"""`flexrt inspect | compile | run | export-onnx | demo`: the argument parser, and the one place errors become exit codes.

Nothing heavy is imported before the arguments are parsed (`flexrt --help` needs no torch); each
command imports what it uses. Every user mistake is one line on stderr and exit code 2; `--debug`
shows the traceback as well.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Sequence

from flexrt.cli import commands, run
from flexrt.errors import FlexrtError, UsageError
from flexrt.serving import cli as serve_cli

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (not the whole usage text) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="flexrt", description="Compile PyTorch models for ranges of input shapes, and run them.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each stage (INFO; -vv for DEBUG)")
    parser.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="show an artifact's inputs, outputs, profiles, segments and sizes")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the same as JSON")
    p.set_defaults(fn=commands.inspect_artifact)
    p = sub.add_parser("compile", help="compile a model from MODULE:CALLABLE and save it")
    p.add_argument("model", help="MODULE:CALLABLE returning an nn.Module, e.g. mypkg.models:make_model")
    p.add_argument("--input", action="append", required=True, type=commands.parse_input,
                   help="NAME=MIN/OPT/MAX[:dtype] with shapes like 1x3x224x224, or NAME=SHAPE[:dtype] (repeat per input)")
    p.add_argument("--precision", action="append", default=None, choices=sorted(commands.PRECISIONS),
                   help="engine precision (repeat for several; default float32)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(fn=commands.compile_model)
    run.add_parser(sub)
    p = sub.add_parser("export-onnx", help="write a model as ONNX with dynamic axes from its ranges, and print trtexec/polygraphy lines")
    p.add_argument("model", help="MODULE:CALLABLE returning an nn.Module")
    p.add_argument("--input", action="append", required=True, type=commands.parse_input,
                   help="NAME=MIN/OPT/MAX[:dtype] or NAME=SHAPE[:dtype] (repeat per input)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.set_defaults(fn=commands.export_onnx)
    p = sub.add_parser("demo", help="compile the seed's ExpandReshapeModel for batch 1..N and compare with eager")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--embed-dim", type=int, default=768, help="a multiple of 12 (the model splits it into 12 heads)")
    p.set_defaults(fn=commands.demo)
    serve_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.fn(args)
    except (FlexrtError, UsageError) as e:
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(e).split())
        print(f"flexrt: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("flexrt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
