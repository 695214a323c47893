"""``python -m harness.bench [bench options]``, and ``python -m harness.bench worker BACKEND REQUEST OUT``
(the same as ``python -m harness.bench.worker``)."""

import argparse
import sys

from harness.bench import add_command
from harness.bench.worker import main as worker_main

if sys.argv[1:2] == ["worker"]:
    sys.exit(worker_main(sys.argv[2:]))
parser = argparse.ArgumentParser(prog="python -m harness.bench")
add_command(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(["bench", *sys.argv[1:]])
sys.exit(args.func(args))
