"""The ledger: which requests a model has honoured, with no token stored in clear.

Each entry keeps a request id, the time, counts, and salted SHA-256 digests: one per forgotten
(user token, item token) pair, one per whole-user token, and one per user that lost pairs (so
that re-applying the ledger hashes only those users' rows).  The salt is drawn once per chain
and travels with the checkpoint.  Tokens are often guessable (small integers), so a digest
protects a token only as far as the checkpoint itself is kept confidential.

Token digests are also used for the checkpoint's id maps (``token_codes``): 64-bit salted codes
of every internal id's token, so a model can be mapped onto a dataset whose ids were renumbered.
"""
from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

_SEP_USER, _SEP_ITEM = b"\x1e", b"\x1f"


def _digest(salt: bytes, user: str, item: str | None = None) -> str:
    data = salt + _SEP_USER + user.encode("utf-8")
    if item is not None:
        data += _SEP_ITEM + item.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def token_codes(tokens, salt: bytes = b"") -> np.ndarray:
    """One signed 64-bit code per token (the first 8 bytes of a salted SHA-256), [n] int64."""
    return np.array(
        [int.from_bytes(hashlib.sha256(salt + str(t).encode("utf-8")).digest()[:8], "little", signed=True)
         for t in tokens], dtype=np.int64)


def tokens_of(dataset, field_name: str) -> np.ndarray:
    """Token of every internal id of ``field_name`` (the user or item field), [n] str."""
    return np.asarray(dataset.field2id_token[field_name])


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass
class Ledger:
    """The honoured requests of one model, oldest first (``entries`` are JSON-able dicts)."""

    salt: str = field(default_factory=lambda: secrets.token_hex(16))
    entries: list = field(default_factory=list)

    @classmethod
    def from_meta(cls, meta: dict) -> "Ledger":
        raw = meta.get("ledger")
        if raw is None:
            return cls()
        if not isinstance(raw, dict) or not isinstance(raw.get("salt"), str) or not isinstance(raw.get("entries"), list):
            raise ValueError("the checkpoint's ledger is malformed")
        return cls(raw["salt"], list(raw["entries"]))

    def to_meta(self) -> dict:
        return {"salt": self.salt, "entries": self.entries}

    @property
    def _salt(self) -> bytes:
        return bytes.fromhex(self.salt)

    def record(self, train, request, request_id: str) -> dict:
        """Append the entry of ``request`` (internal ids of ``train``); returns it."""
        u_tok, i_tok = tokens_of(train, train.uid_field), tokens_of(train, train.iid_field)
        salt = self._salt
        pair_users = np.unique(request.users)
        entry = {
            "request_id": request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "mode": request.mode,
            "interactions": int(len(request)),
            "users": int(len(pair_users)),
            "whole_users": int(len(request.whole_users)),
            "pair_hashes": sorted(_digest(salt, u_tok[u], i_tok[i]) for u, i in zip(request.users, request.items)),
            "pair_user_hashes": sorted(_digest(salt, u_tok[u]) for u in pair_users),
            "user_hashes": sorted(_digest(salt, u_tok[u]) for u in request.whole_users),
        }
        self.entries.append(entry)
        return entry

    def forgotten_rows(self, train) -> np.ndarray:
        """Rows of ``train`` that an entry forgot, a boolean mask [n_inter]."""
        inter = train.inter_feat
        users = inter[train.uid_field].numpy()
        items = inter[train.iid_field].numpy()
        drop = np.zeros(len(users), dtype=bool)
        if not self.entries:
            return drop
        salt = self._salt
        whole = set().union(*(e.get("user_hashes", []) for e in self.entries))
        touched = set().union(*(e.get("pair_user_hashes", []) for e in self.entries))
        pairs = set().union(*(e.get("pair_hashes", []) for e in self.entries))
        u_tok, i_tok = tokens_of(train, train.uid_field), tokens_of(train, train.iid_field)
        present = np.unique(users)
        user_digest = {int(u): _digest(salt, u_tok[u]) for u in present}
        whole_ids = [u for u, d in user_digest.items() if d in whole]
        drop |= np.isin(users, whole_ids)
        candidates = np.flatnonzero(np.isin(users, [u for u, d in user_digest.items() if d in touched]) & ~drop)
        for row in candidates:
            if _digest(salt, u_tok[users[row]], i_tok[items[row]]) in pairs:
                drop[row] = True
        return drop


def data_fingerprint(train) -> str:
    """A short hash of a training set's (user token, item token) pairs.

    Token-based, so it does not change when a dataset's internal ids are renumbered (RecBole
    numbers ids in order of appearance): a checkpoint fits the data it was trained on.
    """
    inter = train.inter_feat
    u_code = token_codes(tokens_of(train, train.uid_field))[inter[train.uid_field].numpy()]
    i_code = token_codes(tokens_of(train, train.iid_field))[inter[train.iid_field].numpy()]
    order = np.lexsort((i_code, u_code))
    h = hashlib.sha256(np.stack([u_code[order], i_code[order]], 1).tobytes())
    return h.hexdigest()[:16]
