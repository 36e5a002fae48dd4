"""The web page: explore saved runs and try a model on an image.

    python app.py                       # http://127.0.0.1:7860, the runs in outputs/ and multirun/
    python app.py --port 8000 --runs outputs --max-upload-mb 5

It lists the runs as `python inference.py --list` does, shows a run's curves, per-class metrics and
figures, and predicts an uploaded image (or a test image) with the top-k classes and the attention
rollout over the image. It listens on this machine only unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import sys

from src.engine import resolve_device
from src.errors import ConfigError
from src.webapp import Workbench, build_page, run_roots, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", nargs="+", metavar="FOLDER",
                        help="folders to look for runs in (default: outputs multirun)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1, this machine only; "
                             "0.0.0.0 opens the page to the network)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--max-upload-mb", type=float, default=10,
                        help="largest upload accepted, in MB (default 10)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error("--port must be between 1 and 65535")
    if args.max_upload_mb <= 0:
        parser.error("--max-upload-mb must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bench = Workbench(run_roots(args.runs), args.max_upload_mb, resolve_device(args.device))
        serve(build_page(bench), bench, args.host, args.port)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
