"""``--help``: every key of the shipped YAML files with its type, default and meaning, read
from the files' ``# (type) meaning`` comments, so the help cannot drift from the files."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

from recbole_unlearn.config import resource_dir
from recbole_unlearn.options import KeySpec, read_specs

USAGE = """usage: {prog} [--model=ENMF] [--dataset=ml-100k] [--unlearner=NAME] [--config_files="a.yaml b.yaml"] [--key=value ...]
       {prog} --verify_audit=PATH
       {prog} --help [--unlearner=NAME | --model=NAME]

Makes a trained RecBole model forget training interactions and reports how well it forgot.
Every option is RecBole's --key=value; any RecBole key works too (--epochs=50, ...).
With --checkpoint=PATH, --model and --dataset default to those the checkpoint names.
Exit codes: 0 done, 2 bad input (one error: line, nothing written), 130 interrupted,
1 a broken audit log or a bug."""


def _title(path: Path) -> str:
    """The first sentence of a YAML file's opening comment."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("# ").strip())
    text = " ".join(words)
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _plain(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"\1", text)


def describe(spec: KeySpec) -> str:
    """One key as ``--name=TYPE  meaning (default ..., bounds)``, wrapped at 100 columns."""
    kind = "|".join(spec.choices) if spec.choices else spec.type.upper()
    extra = [f"default {spec.default if spec.default not in ('', '~') else 'none'}"]
    extra += [f"{op} {bound:g}" for op, bound in spec.bounds]
    head = f"  --{spec.name}={kind}"
    body = textwrap.wrap(f"{_plain(spec.meaning)} ({', '.join(extra)})", 100 - 34)
    lines = [f"{head:<34}{body[0]}"] if len(head) < 34 else [head, " " * 34 + body[0]]
    return "\n".join(lines + [" " * 34 + b for b in body[1:]])


def section(path: Path) -> str:
    """The keys of one YAML file, under its title."""
    specs = read_specs(path)
    lines = [f"{path.parent.name}/{path.name}: {_plain(_title(path))}"]
    lines += [describe(s) for s in specs.values()]
    return "\n".join(lines)


def help_text(prog: str, unlearner: str | None = None, model: str | None = None) -> str:
    """The whole help, or only one unlearner's or model's keys."""
    props = resource_dir("properties")
    unlearners = sorted(props.glob("unlearner/*.yaml"))
    models = sorted(props.glob("model/*.yaml"))
    if unlearner or model:
        kind, name, files = ("unlearner", unlearner, unlearners) if unlearner else ("model", model, models)
        match = [p for p in files if p.stem.lower() == str(name).lower()]
        if not match:
            known = ", ".join(p.stem for p in files)
            return f"unknown {kind} {name!r}; known: {known}"
        return section(match[0])
    parts = [USAGE.format(prog=prog), "", "Unlearners (--unlearner=NAME, any case):"]
    parts += [f"  {p.stem:<12} {_plain(_title(p))}" for p in unlearners]
    parts += ["", "Models (--model=NAME):"]
    parts += [f"  {p.stem:<12} {_plain(_title(p))}" for p in models]
    parts += ["", "Keys, lowest priority first (RecBole's defaults < these files < --config_files < the command line):", ""]
    parts += [section(props / "overall.yaml"), ""]
    parts += [section(p) + "\n" for p in models + unlearners]
    return "\n".join(parts).rstrip() + "\n"
