"""``sunlit-ground model``: operator keys and signed model packages for ``MODEL_INSTALL``.

    sunlit-ground model keygen OPERATOR --out alice.key
        a private key (mode 0600); prints the line for the agent's [models] trusted_keys file
    sunlit-ground model pack MODEL.onnx --name N --version V --key alice.key [--inputs X.npz] --out DIR
        a whole model, its reference set (outputs computed here with onnxruntime) and the signed manifest
    sunlit-ground model delta BASE.onnx TUNED.onnx --name N --version V --key alice.key --out DIR
        only the initializers that changed, for a board whose active or fallback version is BASE
    sunlit-ground model verify DIR --name N --trusted-keys FILE [--base BASE.onnx]
        the board's checks, here, before uplink

Uplink the package's files to the compute directory's staging/, then send the MODEL_INSTALL line
that pack and delta print last. Reference inputs default to the shipped model's (its first
held-out tiles, which the board keeps); a delta leaves them out and the board uses its base's,
unless --with-inputs. Exit codes: 0 done, 1 a check failed, the output could not be written (> /dev/full),
or keygen's key file or pack's and delta's package could not be written (a full disk, a folder this user
cannot write in, a read-only file system: nothing is left under its name, and a package there before stays
whole: every file is written before any is renamed into place), 2 bad input (a folder where a package file
goes too).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from flight.compute.package import (
    DEFAULT_TOLERANCE,
    PackageError,
    load_trusted_keys,
    refuse_external_data,
)
from flight.storage import printable
from ground.model_package import (
    KeyWriteError,
    PackageWriteError,
    generate_key,
    load_inputs,
    pack_delta,
    pack_full,
    public_line,
    read_key_file,
    verify_package,
    write_key_file,
)

EXIT_FAILED, EXIT_INPUT = 1, 2


def _model(path: str) -> bytes:
    """An .onnx to pack, refused naming the file where its weights lie in another (before onnxruntime sees it), or
    where it is larger than the board takes, unread (found in audit: a 2.2 GB file was read, 4.6 GB of memory and
    14 s, and refused as "RuntimeError: narrowing_error"), or no regular file (a FIFO, never waited on)."""
    from flight.compute.uplink import MAX_MODEL_BYTES
    from flight.storage import ReadRefused, read_limited

    try:
        data = read_limited(Path(path), MAX_MODEL_BYTES)[0]
    except ReadRefused as exc:
        raise PackageError(f"{path}: {exc}" + (" (MAX_MODEL_BYTES: protobuf's limit, for a model with its weights "
                                               "in it; the board refuses a larger one)" if exc.kind == "limit"
                                               else "")) from None
    except OSError as exc:
        raise PackageError(f"{path}: {exc.strerror}") from None
    refuse_external_data(data, path)
    return data


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = generate_key()
    write_key_file(args.out, args.operator, key, overwrite=args.force)
    print(f"private key for {args.operator} in {args.out} (mode 600: keep it to yourself); add this line to the "
          "agent's [models] trusted_keys file:", file=sys.stderr)
    print(public_line(args.operator, key))
    return 0


def _report(package: Any) -> None:
    for name, size in package.files.items():
        print(f"{package.directory / name}  {size} B")
    print(f"total {package.total_bytes} B; uplink these to the compute directory's staging/, then send:")
    print(package.command)


def _cmd_pack(args: argparse.Namespace) -> int:
    operator, key = read_key_file(args.key)
    _report(pack_full(_model(args.model), args.name, args.version, operator, key, args.out, load_inputs(args.inputs),
                      args.tolerance))
    return 0


def _cmd_delta(args: argparse.Namespace) -> int:
    operator, key = read_key_file(args.key)
    _report(pack_delta(_model(args.base), _model(args.tuned), args.name, args.version, operator, key, args.out,
                       load_inputs(args.inputs), args.tolerance, with_inputs=args.with_inputs))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    trusted = load_trusted_keys(args.trusted_keys)
    base = _model(args.base) if args.base else None  # bounded, no FIFO waited on (found in audit: verify hung)
    inputs = load_inputs(args.inputs) if args.inputs else None
    try:
        lines = verify_package(args.directory, args.name, trusted, base, inputs)
    except PackageError as exc:
        print(f"FAILED: {printable(str(exc))}")
        return EXIT_FAILED
    # A signed manifest's text (created_utc is any short string) escaped: an escape sequence or a newline in it
    # would forge a line ("OK: ...") or drive the operator's terminal (found in audit).
    print("\n".join(printable(line) for line in lines))
    print("OK: the board will accept this package (given its base, for a delta)")
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (KeyWriteError, PackageWriteError) as exc:  # the file system's refusal, not the operator's input
            print(f"sunlit-ground model: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except PackageError as exc:
            print(f"sunlit-ground model: {exc}", file=sys.stderr)
            return EXIT_INPUT
        except OSError as exc:  # a file that cannot be read or written
            if exc.filename is None:  # the output's (`> /dev/full`): ground.cli says so, exit 1 (found in audit:
                raise                 # "sunlit-ground model: : No space left on device", exit 2, bad input)
            print(f"sunlit-ground model: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_INPUT
        except Exception as exc:  # noqa: BLE001 - onnx and onnxruntime refuse a bad model in many ways
            print(f"sunlit-ground model: cannot use that model: {type(exc).__name__}: {str(exc)[:300]}",
                  file=sys.stderr)
            return EXIT_INPUT

    return run


def add_model_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``model`` and its subcommands to a parser's subparsers; each sets ``func``."""
    model = subparsers.add_parser("model", help="operator keys and signed model packages (MODEL_INSTALL)",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = model.add_subparsers(dest="model_cmd", required=True)

    keygen = sub.add_parser("keygen", help="a new operator key; prints its trusted-keys line")
    keygen.add_argument("operator", help="the operator's name (it signs as this; letters, digits, _ . @ + -)")
    keygen.add_argument("--out", required=True, help="the private key file to write (mode 600)")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    keygen.set_defaults(func=_guarded(_cmd_keygen))

    def package_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", required=True, help="model name on board")
        p.add_argument("--version", required=True, help="its new version")
        p.add_argument("--key", required=True, help="your operator key file (sunlit-ground model keygen)")
        p.add_argument("--inputs", help="reference inputs: an .npy, or an .npz with x (default: the shipped "
                       "model's first held-out tiles)")
        p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                       help=f"max |output - expected| on board (default {DEFAULT_TOLERANCE:g})")
        p.add_argument("--out", default="staging", help="where to write the package (default ./staging)")

    pack = sub.add_parser("pack", help="sign a whole model with its reference set")
    pack.add_argument("model", help="the .onnx file")
    package_args(pack)
    pack.set_defaults(func=_guarded(_cmd_pack))

    delta = sub.add_parser("delta", help="sign only the initializers that changed from a base model")
    delta.add_argument("base", help="the base .onnx: the board's active or fallback version")
    delta.add_argument("tuned", help="the fine-tuned .onnx (the same graph, other initializer values)")
    package_args(delta)
    delta.add_argument("--with-inputs", action="store_true",
                       help="send the reference inputs too (when the board keeps none with the base)")
    delta.set_defaults(func=_guarded(_cmd_delta))

    verify = sub.add_parser("verify", help="check a package as the board will")
    verify.add_argument("directory")
    verify.add_argument("--name", required=True)
    verify.add_argument("--trusted-keys", required=True, help="a trusted-keys file or directory, as the agent's")
    verify.add_argument("--base", help="a delta's base .onnx")
    verify.add_argument("--inputs", help="a delta's reference inputs when it leaves them out (default: shipped)")
    verify.set_defaults(func=_guarded(_cmd_verify))
    return model
