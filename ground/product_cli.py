"""``sunlit-ground product show PATH...``: what the board vouches for in products it downlinked.

    sunlit-ground file get products/job00003-cloud_tiles_test.npz
    sunlit-ground product show job00003-cloud_tiles_test.npz [--json]

Reads each product (its ``.npz``, or its ``.json`` summary) and its receipt (ground/receipts.py):
the model it came from, the protection it ran under, its checks and their counts, reruns and
repairs, the scrub age and the environment the board predicted; from an ``.npz``, which tiles failed
and (where others were checked) which went unchecked, the first few a line and all of them in
``--json`` (``failed_tiles``, ``unchecked_tiles``; null for a summary, which has no per-tile
statuses: those are in the ``.npz``). A product is vouched for when every tile was checked and
passed, by checks that see a fault in the weights too (the checksum pass, or scrubbed weights:
double runs and range checks alone do not), and its receipt agrees with itself, its header and its
tiles; a training product (its summary, the trained model beside it) when that model is the one its
receipt names, its steps guarded by the step checks it counts; a training checkpoint (``.ck``) when its
digests hold and its receipt names the state it holds. Exit codes: 0 every product vouched
for, 1 one or more not (a failed, unchecked or partly checked tile, tiles passed by checks that
cannot see the weights, a receipt that contradicts itself, its header or its tiles, a receipt of a
version newer than this ground reads (update the ground software), a trained model not beside its
summary or changed), 2 bad input (a file that is not a product, a receipt missing a field or of the
wrong kind, text in it that is not printable), said on stderr naming the file and field.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from flight.storage import printable
from ground.receipts import ProductError, read_product

EXIT_NOT_VOUCHED, EXIT_INPUT = 1, 2


def _cmd_show(args: argparse.Namespace) -> int:
    read, bad = [], 0
    for path in args.paths:
        try:
            read.append(read_product(path))
        except ProductError as exc:
            print(f"sunlit-ground product: {printable(str(exc))}", file=sys.stderr)
            bad += 1
        except Exception as exc:  # noqa: BLE001 - a file damaged in a way not foreseen: bad input, not a traceback
            print(f"sunlit-ground product: {printable(path)}: cannot be read ({type(exc).__name__}: "
                  f"{printable(str(exc)[:120])})", file=sys.stderr)
            bad += 1
    if args.json:
        print(json.dumps([r.as_dict() for r in read], indent=1, allow_nan=False))
    else:
        for r in read:  # the file's own name escaped as well: a newline in it forged a "VOUCHED" line (an audit)
            print("\n".join(printable(line) for line in r.lines()))
    if bad:
        return EXIT_INPUT
    return 0 if all(r.vouched for r in read) else EXIT_NOT_VOUCHED


def add_product_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``product`` and its subcommands to a parser's subparsers; each sets ``func``."""
    product = subparsers.add_parser("product", help="a downlinked product's receipt: what the board vouches for",
                                    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = product.add_subparsers(dest="product_cmd", required=True)
    show = sub.add_parser("show", help="each product's model, protection, checks and environment, and whether "
                          "the board vouches for it")
    show.add_argument("paths", nargs="+", metavar="PATH", help="a product's .npz or its .json summary, or a "
                      "training checkpoint (.ck)")
    show.add_argument("--json", action="store_true", help="as JSON: header, receipt, verdict")
    show.set_defaults(func=_cmd_show)
    return product
