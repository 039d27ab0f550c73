"""Command line: every option is RecBole's ``--key=value``; any config key may be given.

Exit codes: 0 success, 2 bad input (one ``error:`` line on stderr, nothing written),
130 interrupted (Ctrl-C; nothing published), 1 a broken audit log (``--verify_audit``) or a bug.
Everything the run prints (RecBole's log, warnings, the table) goes to stdout, so stderr
carries only the error.
"""
from __future__ import annotations

import contextlib
import sys

from recbole_unlearn.errors import UnlearnInputError


def parse_options(argv: list[str]) -> dict[str, str]:
    """``--key=value`` arguments as a dict of strings (the value may itself contain ``=``).

    Errors are one line and echo at most 160 characters of an argument.

    Raises:
        UnlearnInputError: an argument not of the form ``--key=value``, or a key given twice
            with different values.
    """
    from recbole_unlearn.options import shown

    opts: dict[str, str] = {}
    for arg in argv:
        if not isinstance(arg, str):
            raise UnlearnInputError(f"unrecognized argument {shown(arg, 160)}: options are written --key=value")
        key, sep, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if not key or not sep:
            raise UnlearnInputError(f"unrecognized argument {shown(arg, 160)}: options are written --key=value")
        if opts.get(key, value) != value:
            raise UnlearnInputError(f"option {shown('--' + key, 160)} given twice with different values")
        opts[key] = value
    return opts


def main(argv: list[str] | None = None) -> int:
    """Run :func:`run_unlearn` with ``--model``, ``--dataset``, ``--config_files`` and every
    other ``--key=value`` as a config key (command-line priority: above the config files)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip() + "\n\nusage: python run_unlearn.py [--model=ENMF] [--dataset=ml-100k] "
              "[--unlearner=NAME] [--config_files=\"a.yaml b.yaml\"] [--key=value ...]\n"
              "See README.md for the keys.")
        return 0
    saved_argv = sys.argv
    try:
        opts = parse_options(argv)
        if "verify_audit" in opts:
            from recbole_unlearn.outputs import verify_audit

            ok, message = verify_audit(opts["verify_audit"])
            print(message if ok else "error: " + message, file=sys.stdout if ok else sys.stderr)
            return 0 if ok else 1
        files = opts.pop("config_files", None)
        model, dataset = opts.pop("model", "ENMF"), opts.pop("dataset", "ml-100k")
        # The options reach RecBole's Config as config_dict (converted like command-line
        # values); sys.argv is emptied so RecBole does not parse them a second time.
        sys.argv = saved_argv[:1]
        with contextlib.redirect_stderr(sys.stdout):
            from recbole_unlearn import run_unlearn

            run_unlearn(
                model=model,
                dataset=dataset,
                config_file_list=files.split() if files else None,
                config_dict=opts,
            )
    except UnlearnInputError as e:
        print("error: " + str(e).replace("\n", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    finally:
        sys.argv = saved_argv
    return 0
