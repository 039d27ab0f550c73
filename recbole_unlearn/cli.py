"""Command line: every option is RecBole's ``--key=value``; any config key may be given.

Exit codes: 0 success, 2 bad input (one line on stderr), 1 anything else.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``--model``, ``--dataset`` and ``--config_files`` and run :func:`run_unlearn`;
    every other ``--key=value`` is read by RecBole's Config from ``sys.argv``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nusage: python run_unlearn.py [--model=ENMF] [--dataset=ml-100k] "
              "[--unlearner=NAME] [--config_files=\"a.yaml b.yaml\"] [--key=value ...]\n"
              "See README.md for the keys.")
        return 0
    opts = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            opts[key] = value
    from recbole_unlearn import run_unlearn
    from recbole_unlearn.errors import UnlearnInputError

    files = opts.get("config_files")
    try:
        run_unlearn(
            model=opts.get("model", "ENMF"),
            dataset=opts.get("dataset", "ml-100k"),
            config_file_list=files.split() if files else None,
        )
    except UnlearnInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
