"""Command line: every option is RecBole's ``--key=value``; any config key may be given.

Exit codes: 0 success, 2 bad input (one ``error:`` line on stderr, nothing written),
130 interrupted (Ctrl-C; nothing published), 1 a broken audit log (``--verify_audit``) or a bug.
Everything the run prints (RecBole's log, warnings, the table) goes to stdout, so stderr
carries only the error.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown

#: seconds a failing process other than rank 0 waits before it exits (rank 0 prints the error)
GROUP_ERROR_GRACE_S = 2.0


def parse_options(argv: list[str]) -> dict[str, str]:
    """``--key=value`` arguments as a dict of strings (the value may itself contain ``=``).

    Errors are one line and echo at most 160 characters of an argument.

    Raises:
        UnlearnInputError: an argument not of the form ``--key=value``, or a key given twice
            with different values.
    """
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


def _help(argv: list[str], prog: str) -> str:
    from recbole_unlearn.help import help_text

    opts = dict(a[2:].partition("=")[::2] for a in argv if a.startswith("--") and "=" in a)
    return help_text(prog, unlearner=opts.get("unlearner"), model=opts.get("model") if "model" in opts else None)


def main(argv: list[str] | None = None, prog: str = "python run_unlearn.py") -> int:
    """Run :func:`run_unlearn` with ``--model``, ``--dataset`` (by default those a
    ``--checkpoint`` names, else ENMF and ml-100k), ``--config_files`` and every other
    ``--key=value`` as a config key; or ``--help``, ``--verify_audit=PATH``,
    ``--convert_checkpoint=PATH --out=PATH``."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(_help(argv, prog), end="")
        return 0
    saved_argv = sys.argv
    try:
        opts = parse_options(argv)
        if "verify_audit" in opts:
            from recbole_unlearn.outputs import verify_audit

            ok, message = verify_audit(opts["verify_audit"])
            print(message if ok else "error: " + message, file=sys.stdout if ok else sys.stderr)
            return 0 if ok else 1
        nproc = str(opts.get("nproc", "1")).strip()
        if not nproc.isdigit() or int(nproc) < 1:
            raise UnlearnInputError(f"nproc must be an integer >= 1, not {shown(nproc, 40)}")
        nproc = int(nproc)
        if nproc > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # start the group's local processes
            return _spawn_group(argv, prog, opts, nproc)
        files = opts.pop("config_files", None)
        files = files.split() if files else None
        model, dataset = opts.pop("model", None), opts.pop("dataset", None)
        # The options reach RecBole's Config as config_dict (converted like command-line
        # values); sys.argv is emptied so RecBole does not parse them a second time.
        sys.argv = saved_argv[:1]
        with contextlib.redirect_stderr(sys.stdout):
            if "convert_checkpoint" in opts:
                from recbole_unlearn.convert import convert_checkpoint

                stock, out = opts.pop("convert_checkpoint"), opts.pop("out", None)
                if not out:
                    raise UnlearnInputError("--convert_checkpoint needs --out=PATH, the safe checkpoint to write")
                done = convert_checkpoint(stock, out, model, dataset, files, opts)
                print(f"converted {done['model']} ({done['users']} users, {done['items']} items; scores equal to "
                      f"RecBole's within {done['max_score_gap']:.1e}) -> {done['out']}")
                return 0
            if "out" in opts:
                raise UnlearnInputError("out is only read with --convert_checkpoint=PATH")
            from recbole_unlearn import run_unlearn

            if opts.get("checkpoint") and (model is None or dataset is None):  # a chain: its checkpoint's names
                from recbole_unlearn.checkpoint import checkpoint_names

                named = checkpoint_names(opts["checkpoint"])
                model, dataset = model or named[0], dataset or named[1]
            run_unlearn(model=model or "ENMF", dataset=dataset or "ml-100k", config_file_list=files,
                        config_dict=opts)
    except UnlearnInputError as e:
        if int(os.environ.get("RANK", "0")) == 0:  # in a process group every rank has the error; rank 0 says it
            print("error: " + str(e).replace("\n", " "), file=sys.stderr)
        else:  # the launcher stops the group when a process ends: let rank 0 say it first
            time.sleep(GROUP_ERROR_GRACE_S)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing was published", file=sys.stderr)
        return 130
    finally:
        sys.argv = saved_argv
    return 0


def _spawn_group(argv: list[str], prog: str, opts: dict, nproc: int) -> int:
    """``--nproc=N``: this command in N local processes of one group (RecBole's ``world_size``,
    ``offset``, ``ip`` and ``port`` keys); the exit code is the first failing process's."""
    import torch.multiprocessing as mp

    from recbole_unlearn import distributed

    try:
        distributed.spawn(_group_member, nproc, (argv, prog), world_size=int(opts.get("world_size", -1)),
                          offset=int(opts.get("offset", 0)), ip=opts.get("ip", "localhost"), port=int(opts.get("port", 5678)))
    except mp.ProcessExitedException as e:
        return int(e.exit_code) if e.exit_code and e.exit_code > 0 else 1
    except ValueError:
        raise UnlearnInputError("world_size, offset and port are integers") from None
    return 0


def _group_member(argv: list[str], prog: str) -> None:
    code = main(argv, prog)
    if code:
        raise SystemExit(code)
