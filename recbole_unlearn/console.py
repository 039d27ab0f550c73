"""What a run shows: one line per stage on the console, everything in RecBole's log file.

RecBole's ``init_logger`` writes every record (the config dump, each epoch) to its log file and
to the console.  Here the console handler writes to stdout, for the CLI and the Python API
alike, and passes only stage lines (:func:`stage`) and warnings unless ``verbose: True``.
"""
from __future__ import annotations

import logging
import sys

from recbole.utils import init_logger

from recbole_unlearn import distributed

logger = logging.getLogger("recbole_unlearn")


class _StageFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "stage", False) or record.levelno >= logging.WARNING


def setup_logging(config) -> None:
    """RecBole's logger (its log file gets everything), with a quiet console on stdout; in a
    process group only rank 0 logs (the other ranks show errors only)."""
    if not distributed.is_main():
        logging.getLogger().setLevel(logging.ERROR)
        return
    init_logger(config)
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler:
            handler.setStream(sys.stdout)
            if not config["verbose"]:
                handler.addFilter(_StageFilter())


def stage(message: str, *args) -> None:
    """A line for the console (and the log file): one per stage of a run."""
    logger.info(message, *args, extra={"stage": True})
