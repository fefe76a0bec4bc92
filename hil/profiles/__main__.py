"""``python -m hil.profiles shipped [DIR]`` rebuilds the shipped profiles (hil/data/profiles);
``python -m hil.profiles --alt-km 550 --sun-synchronous --out x.parquet ...`` is ``generate_cli``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hil.profiles.generate import build_shipped_profiles, generate_cli


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["shipped"]:
        for path in build_shipped_profiles(*(argv[1:2] or [])):
            print(f"{path} {path.stat().st_size} bytes")
        return 0
    return generate_cli(argv)


if __name__ == "__main__":
    sys.exit(main())
