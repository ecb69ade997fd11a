"""The ``fastconv`` command: see, with measured numbers, why convolution is fast.

Each subcommand is one ``_add_<name>(sub)`` function below that declares its
arguments and names the function that runs it (``"module:function"``,
imported only when that subcommand runs, so ``fastconv --help`` stays
instant).  Adding a subcommand is one such function plus one entry in
:data:`SUBCOMMANDS`.  The runners live in :mod:`fastconv.cli_tools`; they
take the parsed arguments and return the exit status.

Errors the user can fix (a bad value, an unreadable file) end the command
with exit status 1 and one line ``fastconv: error: ...`` on stderr; argparse's
own usage errors exit with 2.  ``--traceback`` shows the full stack instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys

PROG = "fastconv"


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line (the usage itself is one --help away)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout instead of text "
                             "(no progress bar)")


def _threads_flag(parser) -> None:
    parser.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                        help="threads fastconv may use (default: FASTCONV_NUM_THREADS or all "
                             "cores)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, backends, BLAS, threads, SIMD, CUDA, profile",
                       description="Show what fastconv runs on here: versions, which backends "
                                   "are available (and why not), BLAS vendor and threads, CPU "
                                   "SIMD, thread settings, CUDA and the calibration profile.")
    _json_flag(p)
    p.set_defaults(runner="fastconv.cli_tools.info:run")


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="measure the chapter's complexity claims; Markdown + PNG",
                       description="Reproduce the chapter's claims about convolution with "
                                   "measured numbers (operation counts, O(w^d) growth, FFT and "
                                   "separable costs, crossovers, im2col memory, receptive "
                                   "fields, pooling invariance) and write report.md and PNG "
                                   "plots to an output folder.")
    p.add_argument("--quick", action="store_const", dest="preset", const="quick", default="full",
                   help="smaller sizes and fewer repeats: under a minute on a 2-core machine")
    p.add_argument("--preset", choices=("tiny", "quick", "full"), default="full",
                   help=argparse.SUPPRESS)  # 'tiny' exists for the test suite
    p.add_argument("--out", default="fastconv-profile", metavar="DIR",
                   help="output folder for report.md and the plots (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="write the report without PNG plots")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 3 when any claim's verdict is FAIL")
    p.add_argument("--threads", type=_positive_int, default=1, metavar="N",
                   help="threads the timed backends may use (default: 1, so that times are "
                        "the work each algorithm does; CPU time adds up all threads)")
    _json_flag(p)
    p.set_defaults(runner="fastconv.cli_tools.profile:run")


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="time fastconv against scipy, numpy, OpenCV, torch",
                       description="A peer table: median times of fastconv and of the "
                                   "installed peers (scipy.signal, scipy.ndimage, numpy, "
                                   "OpenCV, torch) on a few 1-, 2- and 3-D problems, with "
                                   "ratios peer/fastconv (above 1: fastconv is faster).")
    p.add_argument("--quick", action="store_true", help="smaller problems, fewer repeats")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--save", nargs="?", const="bench/RESULTS-cli.md", default=None,
                   metavar="PATH", help="write the table as Markdown (default PATH: %(const)s)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a bar chart of the ratios")
    _threads_flag(p)
    _json_flag(p)
    p.set_defaults(runner="fastconv.cli_tools.bench_table:run")


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="fit the dispatcher's cost constants on this machine",
                       description="Time every backend on a grid of problems, fit the "
                                   "dispatcher's cost constants, save them as this machine's "
                                   "profile and print the dispatcher's regret (auto time / "
                                   "fastest backend time) before and after.")
    p.add_argument("--full", action="store_true", help="a larger grid (several minutes)")
    p.add_argument("--no-save", action="store_true", help="fit and report, but keep the profile")
    p.add_argument("--profile", default=None, metavar="PATH",
                   help="where to save the profile (default: fastconv's per-user cache)")
    _threads_flag(p)
    _json_flag(p)
    p.set_defaults(runner="fastconv.cli_tools.calibrate_cmd:run")


def _add_convolve(sub) -> None:
    p = sub.add_parser("convolve", help="convolve an image or .npy array with a kernel",
                       description="Convolve IN with KERNEL and write OUT.  IN: .npy, or an "
                                   "image (PNG, JPEG...).  KERNEL: .npy, .txt/.csv, or a name: "
                                   "edge, edge-v, sobel-x, sobel-y, laplace, box:N, gauss:SIGMA.  "
                                   "OUT: .npy (raw values) or .png (scaled to 0-255).")
    p.add_argument("input", metavar="IN")
    p.add_argument("kernel", metavar="KERNEL")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (.npy or .png)")
    p.add_argument("--mode", choices=("full", "same", "valid"), default="same")
    p.add_argument("--method", default="auto",
                   help="'auto' (the dispatcher), or a backend name to force (see `fastconv info`)")
    p.add_argument("--correlate", action="store_true", help="cross-correlate (no kernel flip)")
    p.add_argument("--gray", action="store_true", help="convert a colour image to grey first")
    p.add_argument("--scale", choices=("auto", "minmax", "abs", "clip"), default="auto",
                   help="how values map to PNG grey levels (default: clip when within [0, 1], "
                        "else min-max)")
    p.add_argument("--explain", action="store_true",
                   help="print the dispatcher's candidates and the rule that decided")
    _threads_flag(p)
    _json_flag(p)
    p.set_defaults(runner="fastconv.cli_tools.convolve_cmd:run")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="edge detection, a Gabor bank and max pooling on a photo",
                       description="Run edge detection, a Gabor filter bank and max pooling on "
                                   "a real photograph (matplotlib's sample of Grace Hopper, no "
                                   "network needed) and write a labelled PNG grid.")
    p.add_argument("--image", default=None, metavar="PATH",
                   help="use this image instead of the shipped photograph")
    p.add_argument("--out", default="fastconv-demo.png", metavar="PNG",
                   help="where to write the grid (default: %(default)s)")
    p.add_argument("--orientations", type=_positive_int, default=4, metavar="N",
                   help="Gabor orientations (default: %(default)s)")
    _threads_flag(p)
    _json_flag(p)
    p.set_defaults(runner="fastconv.cli_tools.demo:run")


#: one function per subcommand, in the order ``--help`` lists them
def _add_train(sub) -> None:
    from .cli_tools.train_cmd import add_parser
    add_parser(sub)  # registers `train` and `eval`


SUBCOMMANDS = [_add_info, _add_profile, _add_bench, _add_calibrate, _add_convolve, _add_demo,
               _add_train]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastconv`` command, every subcommand included."""
    parser = _Parser(
        prog=PROG, description="fastconv: fast N-d convolution, measured.  Start with "
                               "`fastconv profile --quick` or `fastconv demo`.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _runner(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv=None) -> int:
    """Run the ``fastconv`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit status: 0 on success, 1 on an error the user can fix
    (one line on stderr), 2 on bad usage (argparse), 130 when interrupted.

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    fastconv 0.1.0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from .cli_tools.common import CLIError
    try:
        if getattr(args, "threads", None):
            from ._config import thread_budget
            with thread_budget(args.threads):
                return int(_runner(args.runner)(args) or 0)
        return int(_runner(args.runner)(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, OSError, MemoryError) as exc:
        if args.traceback:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
