"""Property-based fuzz tests of the input parsers (hypothesis).

* ``load_forget_file``: arbitrary bytes, other encodings, NUL bytes, CR/LF mixes, huge lines,
  extra columns, empty cells and unreadable paths raise only :class:`UnlearnInputError`, with a
  one-line message that echoes at most 200 characters of any token, line or path; valid files
  (generated with their expected internal ids) parse exactly.
* ``parse_options`` and ``convert``: only :class:`UnlearnInputError` comes out, one line of at
  most 250 characters; valid input gives the expected dict / value; booleans are strict.
* ``Config``: a string that would run code if evaluated is data, never executed.

The forget-file tests use :class:`FakeTrain` (only what ``load_forget_file`` reads of a RecBole
Dataset), so no dataset is built per example.
"""
from __future__ import annotations

import errno
import math
import os
import pathlib
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recbole_unlearn.cli import parse_options
from recbole_unlearn.config import Config
from recbole_unlearn.data.forget import ForgetRequest, load_forget_file
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import KeySpec, convert, shown, unknown_key_error

SHOWN_MAX = 200  # characters of the input one echo may repeat
MESSAGE_MAX = 250  # characters of an option / conversion error in total


def fuzz(n: int):
    """Hypothesis settings of one fuzz test: ``n`` examples, no deadline, no example database."""
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def assert_one_line(message: str, limit: int) -> None:
    assert message, "an error needs a message"
    assert message.splitlines() == [message], f"not one line: {message[:300]!r}"
    assert len(message) <= limit, f"{len(message)} characters: {message[:300]!r}..."


@pytest.fixture(scope="module")
def scratch():
    """A folder for the generated files (one per module, so hypothesis can reuse it)."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        yield Path(tmp)


# ---- a fake training split --------------------------------------------------------------------
class FakeTrain:
    """Exactly what ``load_forget_file`` reads of a RecBole Dataset: the id fields, the token
    maps (``[PAD]`` is id 0), ``user_num`` and the interactions as tensors."""

    def __init__(self, uid_field: str, iid_field: str, user_tokens, item_tokens, pairs):
        self.uid_field, self.iid_field = uid_field, iid_field
        self.field2token_id = {
            uid_field: {"[PAD]": 0, **{t: k for k, t in enumerate(user_tokens, start=1)}},
            iid_field: {"[PAD]": 0, **{t: k for k, t in enumerate(item_tokens, start=1)}},
        }
        self.user_num, self.item_num = len(user_tokens) + 1, len(item_tokens) + 1
        users = np.array([u for u, _ in pairs], dtype=np.int64)
        items = np.array([i for _, i in pairs], dtype=np.int64)
        self.inter_feat = {uid_field: torch.from_numpy(users), iid_field: torch.from_numpy(items)}

    def uid(self, token: str) -> int:
        return self.field2token_id[self.uid_field][token]

    def iid(self, token: str) -> int:
        return self.field2token_id[self.iid_field][token]


# Tokens as RecBole keeps them: no tab, no line break, no surrounding white space (the parser
# strips cells), never [PAD]; letters of any script, punctuation, inner spaces, ':' and so on.
_WORD = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=8)
TOKEN = st.lists(_WORD, min_size=1, max_size=2).map(" ".join).filter(lambda t: t != "[PAD]")
FIELDS = st.sampled_from([("user_id", "item_id"), ("uid", "iid"), ("visitor", "movie:id")])


@st.composite
def trains(draw) -> FakeTrain:
    uid_field, iid_field = draw(FIELDS)
    user_tokens = draw(st.lists(TOKEN, min_size=1, max_size=6, unique=True))
    item_tokens = draw(st.lists(TOKEN, min_size=1, max_size=6, unique=True))
    pairs = draw(st.lists(st.tuples(st.integers(1, len(user_tokens)), st.integers(1, len(item_tokens))),
                          max_size=25, unique=True))
    return FakeTrain(uid_field, iid_field, user_tokens, item_tokens, pairs)


SMALL_TRAIN = FakeTrain("user_id", "item_id", ["u1", "u2", "u3", "Zoë", "a b"], ["i1", "i2", "x:y"],
                        [(1, 1), (1, 2), (2, 3), (3, 1), (4, 2), (5, 3), (5, 1)])
SMALL_TOKENS = ["u1", "u2", "u3", "Zoë", "a b", "i1", "i2", "x:y", "[PAD]", "", " ", "nobody"]

PAD = st.sampled_from(["", "", "", " ", "  ", "\u00a0", "\u3000"])  # stripped around cells
EOL = st.sampled_from(["\n", "\n", "\r\n", "\r"])
BLANK = st.sampled_from(["", " ", "\t", " \t ", "\u3000"])  # lines the parser skips


# ---- valid .forget files parse exactly ----------------------------------------------------------
@st.composite
def valid_forget_files(draw):
    """(train, file bytes, expected users, expected items, expected whole users)."""
    train = draw(trains())
    users = list(train.field2token_id[train.uid_field])[1:]
    items = list(train.field2token_id[train.iid_field])[1:]
    two_columns = draw(st.booleans())
    uid, iid = f"{train.uid_field}:token", f"{train.iid_field}:token"
    header = draw(PAD) + uid + draw(PAD) + (f"\t{draw(PAD)}{iid}{draw(PAD)}" if two_columns else "")
    lines, whole, pu, pi = [header], [], [], []
    for _ in range(draw(st.integers(1, 10))):
        for _ in range(draw(st.integers(0, 1))):
            lines.append(draw(BLANK))
        user = draw(st.sampled_from(users))
        kind = draw(st.sampled_from(["user", "empty item", "pair"]) if two_columns else st.just("user"))
        if kind == "user":
            lines.append(draw(PAD) + user + draw(PAD))
            whole.append(train.uid(user))
        elif kind == "empty item":
            lines.append(draw(PAD) + user + draw(PAD) + "\t" + draw(PAD))
            whole.append(train.uid(user))
        else:
            item = draw(st.sampled_from(items))
            lines.append(draw(PAD) + user + draw(PAD) + "\t" + draw(PAD) + item + draw(PAD))
            pu.append(train.uid(user))
            pi.append(train.iid(item))
    text = "".join(line + draw(EOL) for line in lines[:-1]) + lines[-1] + draw(st.sampled_from(["", "\n", "\r\n"]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    # the documented meaning: every training pair of a whole user (in training order), then the pairs
    all_users = train.inter_feat[train.uid_field].numpy()
    all_items = train.inter_feat[train.iid_field].numpy()
    mask = np.isin(all_users, whole)
    exp_users = np.concatenate([all_users[mask], np.asarray(pu, dtype=np.int64)])
    exp_items = np.concatenate([all_items[mask], np.asarray(pi, dtype=np.int64)])
    return train, (bom + text).encode("utf-8"), exp_users, exp_items, np.unique(np.asarray(whole, dtype=np.int64))


@fuzz(600)
@given(valid_forget_files())
def test_valid_forget_files_parse_to_the_expected_ids(scratch, case):
    train, data, exp_users, exp_items, exp_whole = case
    path = scratch / "valid.forget"
    path.write_bytes(data)
    request = load_forget_file(path, train)
    assert isinstance(request, ForgetRequest) and request.mode == "file" and not request.inject
    assert request.users.dtype == np.int64 and request.items.dtype == np.int64
    np.testing.assert_array_equal(request.users, exp_users)
    np.testing.assert_array_equal(request.items, exp_items)
    np.testing.assert_array_equal(request.whole_users, exp_whole)
    assert request.details == {"file": str(path)}
    load_forget_file(str(path), train)  # a str path reads the same


# ---- bad .forget files: only UnlearnInputError, one bounded line --------------------------------
def parse_or_error(path, train) -> ForgetRequest | None:
    """The request, or None after checking the error contract (any other exception escapes)."""
    try:
        request = load_forget_file(path, train)
    except UnlearnInputError as e:
        message = str(e)
        echoed_path = shown(str(path)) if isinstance(path, (str, os.PathLike)) else shown(path)
        # fixed text (< 100 characters), at most one echoed path and one echoed token / line
        assert_one_line(message, 100 + SHOWN_MAX + len(echoed_path))
        assert "Z" * (SHOWN_MAX + 1) not in message  # the generated huge runs are of "Z"
        return None
    # a successful parse holds known, non-padding internal ids only
    assert request.users.dtype == np.int64 and request.items.dtype == np.int64
    assert len(request.users) == len(request.items)
    assert set(request.users.tolist()) <= set(range(1, train.user_num))
    assert set(request.items.tolist()) <= set(range(1, train.item_num))
    assert set(request.whole_users.tolist()) <= set(range(1, train.user_num))
    assert np.all(np.diff(request.whole_users) > 0)  # distinct and sorted
    return request


HEADERS = st.sampled_from([
    "user_id:token", "user_id:token\titem_id:token", " user_id:token \t item_id:token ",
    "user_id:token\titem_id:token\ttimestamp:float", "user_id\titem_id", "", "\t", "item_id:token",
    "user_id:token\t", "\ufeffuser_id:token", "user_id:token\x00", "USER_ID:TOKEN",
])
CELL = st.one_of(
    st.sampled_from(SMALL_TOKENS),
    st.text(max_size=12),
    st.integers(SHOWN_MAX - 10, 3000).map(lambda n: "Z" * n),  # a long token or line
    st.sampled_from(["\x00", "u1\x00", "\r", "\x85", "\u2028", "\ufeff", "\udc80", "\\t"]),
)
SEPARATORS = st.sampled_from(["\n", "\r\n", "\r", "\n\r", "\x0b", "\x0c", "\x85", "\u2028", "\x00", "\t", "\n\n"])
ENCODINGS = st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be",
                             "utf-32", "latin-1", "cp1252"])


@st.composite
def messy_forget_files(draw) -> bytes:
    """Text near the format: real headers and tokens mixed with garbage, in any encoding."""
    parts = [draw(st.one_of(HEADERS, st.text(max_size=30)))]
    for _ in range(draw(st.integers(0, 8))):
        parts.append(draw(SEPARATORS))
        parts.append(draw(PAD).join(draw(st.lists(CELL, max_size=4))) if draw(st.booleans())
                     else "\t".join(draw(st.lists(CELL, max_size=4))))
    text = "".join(parts)
    encoding = draw(ENCODINGS)
    # surrogatepass writes lone surrogates as (invalid) UTF-8 / UTF-16 bytes
    errors = "surrogatepass" if encoding.startswith("utf") else "replace"
    return text.encode(encoding, errors=errors)


@fuzz(1000)
@given(messy_forget_files())
def test_messy_forget_files_raise_only_the_input_error(scratch, data):
    path = scratch / "messy.forget"
    path.write_bytes(data)
    parse_or_error(path, SMALL_TRAIN)


@fuzz(1500)
@given(st.sampled_from([b"", b"user_id:token\n", b"user_id:token\titem_id:token\r\n", b"\xef\xbb\xbf",
                        b"\xef\xbb\xbfuser_id:token\titem_id:token\n", b"\xff\xfe", b"\xfe\xff", b"\x00"]),
       st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_the_input_error(scratch, prefix, data):
    path = scratch / "bytes.forget"
    path.write_bytes(prefix + data)
    parse_or_error(path, SMALL_TRAIN)


def test_known_bad_files_name_their_fault(scratch):
    header = "user_id:token\titem_id:token"
    cases = [
        (f"{header}\nu1\ti1\n".encode("utf-16"), "not UTF-8.*UTF-16"),
        (f"{header}\nu1\ti1\n".encode("utf-32"), "not UTF-8"),
        (f"{header}\nu1\ti1\n".encode("utf-16-be"), "header must be"),  # no BOM: NULs are valid UTF-8
        (b"user_id:token\n\xff\xfe\x00garbage\n", "not UTF-8"),
        ("user_id:token\n\udcff\n".encode("utf-8", "surrogatepass"), "not UTF-8"),
        (b"\n \n\t\n", "is empty"),
        (f"{header}\r\n\r\n".encode(), "header but no request lines"),
        (f"{header}\nu1\ti1\x00\n".encode(), r"line 2: unknown item token 'i1\\x00'"),
        (f"{header}\nu1\ti1\tstamp\n".encode(), "line 2: malformed line"),
        (f"{header}\n\n\n\nnobody\n".encode(), "line 5: unknown user token 'nobody'"),  # physical line
        (f"{header}\r\nu1\r\n\r\nu2\t[PAD]\n".encode(), r"line 4: unknown item token '\[PAD\]'"),
        (f"{header}\nu1\ti1\n\x85nobody\n".encode(), "line 4: unknown user token 'nobody'"),  # \x85 breaks
        (b"user_id:token\x00\titem_id:token\nu1\n", "header must be"),
    ]
    for data, message in cases:
        path = scratch / "known.forget"
        path.write_bytes(data)
        with pytest.raises(UnlearnInputError, match=message):
            load_forget_file(path, SMALL_TRAIN)
        assert parse_or_error(path, SMALL_TRAIN) is None


HUGE = 10_000_000  # a 10 MB token / line


@pytest.mark.parametrize("where", ["user", "item", "header", "extra column", "header column"])
def test_huge_lines_are_never_echoed_in_full(scratch, where):
    huge = "Z" * HUGE
    header = "user_id:token\titem_id:token"
    text = {
        "user": f"{header}\n{huge}\ti1\n",
        "item": f"{header}\nu1\t{huge}\n",
        "header": f"{huge}\nu1\ti1\n",
        "extra column": f"{header}\nu1\ti1\t{huge}\n",
        "header column": f"{header}\t{huge}\nu1\ti1\n",
    }[where]
    path = scratch / "huge.forget"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UnlearnInputError) as info:
        load_forget_file(path, SMALL_TRAIN)
    assert_one_line(str(info.value), 100 + SHOWN_MAX + len(shown(str(path))))
    assert "Z" * (SHOWN_MAX + 1) not in str(info.value)


def test_a_valid_file_with_a_huge_number_of_lines(scratch):
    path = scratch / "many.forget"
    path.write_text("user_id:token\titem_id:token\n" + "u1\ti1\r\nu3\n" * 50_000, encoding="utf-8")
    request = load_forget_file(path, SMALL_TRAIN)
    assert len(request) == 50_001  # the 50,000 pairs, plus u3's one training pair (once)
    np.testing.assert_array_equal(request.whole_users, [3])


# ---- paths that are no readable file ------------------------------------------------------------
PATHS = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from("ab/.\x00\udcff~é\n"), max_size=30),
    st.integers(255, 6000).map(lambda n: "d" * n),  # name too long
    st.integers(1, 3000).map(lambda n: "/" + "Z" * n + "/r.forget"),
    st.sampled_from([".", "..", "/", "", "/proc/self", "/dev/null", "/nonexistent/r.forget", "tiny",
                     "\x00", "a\x00b", "\udcff", "\ud800", "~/r.forget", "r.forget/", "\n/x"]),
    st.sampled_from([None, 7, 3.5, b"r.forget", ["r.forget"], object()]),
)


@fuzz(600)
@given(PATHS)
def test_paths_that_are_not_readable_files_raise_the_input_error(scratch, raw_path):
    parse_or_error(raw_path, SMALL_TRAIN)


def test_unreadable_files_raise_the_input_error(scratch, monkeypatch):
    with pytest.raises(UnlearnInputError, match="not a regular file"):
        load_forget_file(scratch, SMALL_TRAIN)  # a directory
    with pytest.raises(UnlearnInputError, match="not found"):
        load_forget_file(scratch / "missing.forget", SMALL_TRAIN)
    with pytest.raises(UnlearnInputError, match="cannot read.*OSError"):
        load_forget_file("d" * 5000, SMALL_TRAIN)  # ENAMETOOLONG from stat
    if Path("/proc/self/mem").is_file():  # a "regular" file whose read fails with EIO
        with pytest.raises(UnlearnInputError, match="cannot read.*OSError"):
            load_forget_file("/proc/self/mem", SMALL_TRAIN)
    path = scratch / "secret.forget"
    path.write_text("user_id:token\nu1\n", encoding="utf-8")
    path.chmod(0)
    try:
        if os.geteuid() == 0:  # root reads anything: let the open fail as it would for a user
            def denied(self, *args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied", str(self))

            monkeypatch.setattr(pathlib.Path, "open", denied)
        with pytest.raises(UnlearnInputError, match="cannot read.*PermissionError") as info:
            load_forget_file(path, SMALL_TRAIN)
        assert_one_line(str(info.value), 300)
    finally:
        monkeypatch.undo()
        path.chmod(0o600)


# ---- command-line options ---------------------------------------------------------------------
def expected_options(argv) -> dict | None:
    """The documented meaning of argv: every argument ``--key=value`` (non-empty key, the value
    split at the first '='), a key repeated only with its value; None where it is an error."""
    opts = {}
    for arg in argv:
        if not isinstance(arg, str) or not arg.startswith("--") or "=" not in arg[2:]:
            return None
        key, value = arg[2:].split("=", 1)
        if not key or opts.get(key, value) != value:
            return None
        opts[key] = value
    return opts


KEYS = st.one_of(st.sampled_from(["a", "forget", "eval_args", "x-y", "", "=", "é", "\n", "--"]), st.text(max_size=15))
VALUES = st.one_of(
    st.sampled_from(["", "1", "=", "a=b", "x=y.forget", " ", "\n", "\x00", "~"]),
    st.text(max_size=30),
    st.integers(SHOWN_MAX, 20_000).map(lambda n: "Z" * n),
)
ARGS = st.one_of(
    st.builds(lambda k, v: f"--{k}={v}", KEYS, VALUES),
    st.builds(lambda k, v: f"--{k}={v}", st.sampled_from(["a", "b"]), st.sampled_from(["1", "2"])),  # repeats
    st.text(max_size=30),
    st.builds(lambda p, t: p + t, st.sampled_from(["-", "--", "---", "—", " --"]), st.text(max_size=20)),
    st.integers(SHOWN_MAX, 20_000).map(lambda n: "--" + "Z" * n),  # huge, no '='
    st.integers(SHOWN_MAX, 20_000).map(lambda n: "Z" * n + "=1"),  # huge, no '--'
    st.sampled_from(["--", "--=", "--=3", "-a=1", "a=1", "--a", "", " --a=1", "--\n=1", "--a\udcff=1"]),
)


@fuzz(1500)
@given(st.lists(ARGS, max_size=6))
def test_parse_options_returns_the_options_or_one_short_line(argv):
    expected = expected_options(argv)
    if expected is not None:
        assert parse_options(argv) == expected
        return
    with pytest.raises(UnlearnInputError) as info:
        parse_options(argv)
    assert_one_line(str(info.value), MESSAGE_MAX)
    assert "Z" * (SHOWN_MAX + 1) not in str(info.value)


@fuzz(200)
@given(st.lists(st.one_of(ARGS, st.binary(max_size=8), st.none(), st.integers()), min_size=1, max_size=4)
       .filter(lambda argv: not all(isinstance(a, str) for a in argv)))
def test_parse_options_rejects_arguments_that_are_not_text(argv):
    with pytest.raises(UnlearnInputError) as info:
        parse_options(argv)
    assert_one_line(str(info.value), MESSAGE_MAX)


def test_parse_options_examples():
    assert parse_options([]) == {}
    assert parse_options(["--a==", "--b=c=d", "--é=ü", "--a=="]) == {"a": "=", "b": "c=d", "é": "ü"}
    with pytest.raises(UnlearnInputError, match=r"option '--a' given twice"):
        parse_options(["--a=1", "--a=2"])
    with pytest.raises(UnlearnInputError, match=r"unrecognized argument '--\\n'"):
        parse_options(["--\n"])


# ---- converting option values -------------------------------------------------------------------
NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,39}", fullmatch=True)
BOUNDS = st.lists(st.tuples(st.sampled_from([">=", ">", "<=", "<"]),
                            st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, 1e6]),
                                      st.floats(-1e9, 1e9, allow_nan=False))), max_size=2).map(tuple)
DEFAULTS = st.sampled_from(["~", "null", "", "1", "0.5", "x", "True", "False"])
CHOICES = st.sampled_from([(), (), ("none", "retrain"), ("private", "noise", "users", "random", "file"), ("x",)])
SPECS = st.builds(lambda name, kind, default, bounds, choices: KeySpec(name, kind, default, "a key", "fuzz.yaml",
                                                                       bounds, choices if kind == "str" else ()),
                  NAMES, st.sampled_from(["int", "float", "bool", "str"]), DEFAULTS, BOUNDS, CHOICES)

YAML_SNIPPETS = [
    "[1, 2]", "{a: 1}", "2001-01-01", "2001-01-01 10:00:00", "!!python/object/apply:os.system ['true']",
    "!!binary aGVsbG8=", "&a [*a]", "0x1F", "0o17", "017", "1_000", "1:30", ".inf", "-.inf", ".nan", "1e999",
    "-1e999", "'quoted'", '"1"', "- a", "? x", "|\n  block", "%TAG", "@x", "`x", "#comment", "a: b: c",
    "[", "{", "'", "\t", "1.", ".5", "1e3", "+1", "-0", "0.0", "1.0", "10e-1", "yes", "On", "off", "Y", "n",
    "__import__('os').system('true')", "True", "FALSE", "None", "null", "~", "NULL", "Null", "", " ",
]
RAWS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(YAML_SNIPPETS),
    st.integers().map(str),
    st.integers(-10 ** 400, 10 ** 400).map(str),
    st.floats().map(repr),
    st.integers(1, 6000).map(lambda n: "9" * n),  # far beyond int / float range
    st.integers(1, 400).map(lambda n: "1" * n + ".5"),
    st.integers(SHOWN_MAX, 20_000).map(lambda n: "Z" * n),
    st.builds(lambda a, w, b: a + w + b, st.sampled_from(["", " ", "\t", "\n"]),
              st.sampled_from(["true", "False", "YES", "no", "1", "0", "~", "null", "none", "Retrain", "FILE", "x"]),
              st.sampled_from(["", " ", "\n"])),
)


def config_value(raw: str):
    """The value Config hands ``convert`` for a typed string (its own YAML reading)."""
    try:
        return Config._convert_config_dict(types.SimpleNamespace(), {"key": raw})["key"]
    except ValueError:  # YAML ints beyond 4300 digits: see test_config_reads_huge_integers below
        return raw


def check_converted(spec: KeySpec, result, raw: str | None) -> None:
    """A converted value has the spec's type and bounds (None only for a nullable key)."""
    if result is None:
        assert spec.nullable
        return
    if spec.type == "str":
        assert isinstance(result, str)
        if spec.choices:  # one of the choices, any case and spaces around it
            assert result in spec.choices and (raw is None or raw.strip().lower() == result)
        else:  # the string as typed (never read as YAML)
            assert raw is None or result == raw
        return
    if spec.type == "bool":
        assert isinstance(result, bool)
        return
    assert type(result) is (int if spec.type == "int" else float)
    assert spec.type == "int" or math.isfinite(result)
    for op, bound in spec.bounds:
        assert {">=": result >= bound, ">": result > bound, "<=": result <= bound, "<": result < bound}[op]


def convert_or_error(spec: KeySpec, value, raw: str | None):
    try:
        result = convert(spec, value, raw)
    except UnlearnInputError as e:
        assert_one_line(str(e), MESSAGE_MAX)
        assert "Z" * (SHOWN_MAX + 1) not in str(e) and "9" * (SHOWN_MAX + 1) not in str(e)
        return
    check_converted(spec, result, raw)


@fuzz(1200)
@given(SPECS, RAWS)
def test_convert_typed_strings(spec, raw):
    convert_or_error(spec, config_value(raw), raw)


class Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")


PY_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
              st.sampled_from([10 ** 400, 2 ** 1024, 1e308, -0.0, math.inf, math.nan]),
              # ints beyond repr's 4300 digits (built lazily: hypothesis reprs sampled_from's elements)
              st.integers(4400, 6000).flatmap(lambda n: st.sampled_from([1, -1]).map(lambda s: s * 10 ** n)),
              st.integers(SHOWN_MAX, 50_000).map(lambda n: "Z" * n), st.builds(Unprintable)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


@fuzz(800)
@given(SPECS, PY_VALUES)
def test_convert_values_from_yaml_files(spec, value):
    """raw None: a value read from a YAML file or given as a Python object in config_dict."""
    convert_or_error(spec, value, None)


NUMERIC_SPECS = st.builds(lambda name, kind, default, bounds: KeySpec(name, kind, default, "", "fuzz.yaml", bounds),
                          NAMES, st.sampled_from(["int", "float"]), DEFAULTS, BOUNDS)


@fuzz(500)
@given(NUMERIC_SPECS, st.one_of(st.integers(-10 ** 30, 10 ** 30), st.floats(allow_nan=False, allow_infinity=False)),
       st.sampled_from(["", " ", "  ", "\n"]), st.sampled_from(["", " ", "\n"]))
def test_convert_reads_valid_numbers_exactly(spec, number, left, right):
    """Padded with spaces or newlines (PyYAML refuses a tab next to a scalar: ``'5\t'`` stays
    a string, so an int key rejects it)."""
    if spec.type == "int":
        number = expected = int(number)
    else:
        expected = float(number)
    raw = left + (str(number) if isinstance(number, int) else repr(number)) + right
    in_bounds = all({">=": expected >= b, ">": expected > b, "<=": expected <= b, "<": expected < b}[op]
                    for op, b in spec.bounds)
    if in_bounds:
        result = convert(spec, config_value(raw), raw)
        assert result == expected and type(result) is type(expected)
    else:
        with pytest.raises(UnlearnInputError, match=f"^{spec.name} must be [<>]=? ") as info:
            convert(spec, config_value(raw), raw)
        assert_one_line(str(info.value), MESSAGE_MAX)


# ---- booleans are strict ------------------------------------------------------------------------
BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
BOOL_SPECS = st.builds(lambda name, default: KeySpec(name, "bool", default, "", "fuzz.yaml"),
                       NAMES, st.sampled_from(["False", "True", "~"]))
SPACES = st.text(st.sampled_from(" \t\n\r\u00a0\u3000"), max_size=3)


@st.composite
def any_case(draw, word: str) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in word)


@fuzz(600)
@given(BOOL_SPECS, st.sampled_from(sorted(BOOL_WORDS)).flatmap(lambda w: st.tuples(st.just(w), any_case(w))),
       SPACES, SPACES)
def test_bool_accepts_the_six_words_in_any_case(spec, word_and_typed, left, right):
    word, typed = word_and_typed
    raw = left + typed + right
    assert convert(spec, config_value(raw), raw) is BOOL_WORDS[word]


def test_bool_values_from_yaml_files():
    spec = KeySpec("flag", "bool", "False", "", "fuzz.yaml")
    assert [convert(spec, v) for v in (True, False, 1, 0)] == [True, False, True, False]
    for value in (2, -1, 10 ** 5000, 1.0, 0.0, "true", [], {}):
        with pytest.raises(UnlearnInputError, match="^flag must be true/false/yes/no/1/0, not "):
            convert(spec, value)


NEAR_MISSES = ["on", "off", "y", "n", "t", "f", "ON", "Off", "Y", "N", "enabled", "disabled", "2", "-1", "01",
               "00", "1.0", "0.0", "+1", "-0", "tru", "ye", "yess", "nope", "true!", "t rue", "tr\tue", "falsee",
               "\u0661", "\uff11", "\uff10", "\u212aes", "yes no", "true,", "'true'", '"yes"', "[true]", "1e0",
               "0x1", "TRUE\x00", "\x00", "ｔｒｕｅ", "trüe", "nо", "yеs", "None", "~", "null", "#true", ""]


def mutate(word: str, data) -> str:
    """``word`` with one character inserted, removed or replaced."""
    i = data.draw(st.integers(0, len(word)))
    c = data.draw(st.characters(blacklist_categories=("Cs",)))
    return data.draw(st.sampled_from([word[:i] + c + word[i:], word[:i] + word[i + 1:], word[:i] + c + word[i + 1:]]))


@fuzz(800)
@given(st.data())
def test_bool_rejects_everything_else(data):
    spec = KeySpec(data.draw(NAMES), "bool", data.draw(st.sampled_from(["False", "True"])), "", "fuzz.yaml")
    kind = data.draw(st.sampled_from(["near miss", "text", "mutant", "padded"]))
    if kind == "near miss":
        raw = data.draw(st.sampled_from(NEAR_MISSES))
    elif kind == "text":
        raw = data.draw(st.text(max_size=12))
    elif kind == "mutant":
        raw = mutate(data.draw(st.sampled_from(sorted(BOOL_WORDS))), data)
    else:
        raw = data.draw(SPACES) + data.draw(st.sampled_from(NEAR_MISSES)) + data.draw(SPACES)
    if raw.strip().lower() in BOOL_WORDS:
        return  # a mutation that happened to give a valid word (e.g. a space added at the end)
    with pytest.raises(UnlearnInputError) as info:
        convert(spec, config_value(raw), raw)
    assert_one_line(str(info.value), MESSAGE_MAX)


# ---- shown / unknown keys ----------------------------------------------------------------------
@fuzz(500)
@given(st.one_of(PY_VALUES, RAWS), st.integers(0, 400))
def test_shown_is_one_bounded_line(value, limit):
    text = shown(value, limit)
    assert isinstance(text, str) and text.splitlines() == [text]
    assert len(text) <= max(limit, 3) and len(shown(value)) <= SHOWN_MAX


@fuzz(500)
@given(st.one_of(st.text(max_size=60), st.integers(SHOWN_MAX, 200_000).map(lambda n: "forget_users" * n)))
def test_unknown_key_error_is_one_bounded_line(key):
    error = unknown_key_error(key, {"forget_users", "forget_file", "epochs", "learning_rate"})
    assert isinstance(error, UnlearnInputError)
    assert_one_line(str(error), MESSAGE_MAX)
    if key == "forget_user":
        assert "did you mean 'forget_users'" in str(error)


def test_unknown_key_error_suggests_the_closest_key():
    assert "did you mean 'forget_users'?" in str(unknown_key_error("forget_user", {"forget_users", "epochs"}))
    assert "see python run_unlearn.py --help" in str(unknown_key_error("zzz", {"forget_users", "epochs"}))


# ---- Config never evaluates a value -------------------------------------------------------------
INJECTION = "__import__('os').system('touch X')"


def test_config_values_are_never_evaluated(monkeypatch):
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # pytest's own options are no config keys
    with tempfile.TemporaryDirectory(prefix="noeval-") as tmp:
        monkeypatch.chdir(tmp)
        with pytest.raises(UnlearnInputError, match="^forget_users must be an integer, not ") as info:
            Config(model="ENMF", dataset="ml-100k", config_dict={"forget_users": INJECTION})
        assert_one_line(str(info.value), MESSAGE_MAX)
        assert not Path(tmp, "X").exists()
        config = Config(model="ENMF", dataset="ml-100k", config_dict={"results": INJECTION})
        assert config["results"] == INJECTION and type(config["results"]) is str
        assert not Path(tmp, "X").exists()


def test_config_reads_huge_integers():
    """An integer of more than 4300 digits stays the typed string (PyYAML cannot build it)."""
    value = Config._convert_config_dict(types.SimpleNamespace(), {"forget_users": "9" * 5000})["forget_users"]
    with pytest.raises(UnlearnInputError):
        convert(KeySpec("forget_users", "float", "1", "", "fuzz.yaml"), value, "9" * 5000)
