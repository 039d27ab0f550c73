"""``python -m recbole_unlearn``: the same command line as ``run_unlearn.py``."""
from recbole_unlearn.cli import main

if __name__ == "__main__":
    raise SystemExit(main(prog="python -m recbole_unlearn"))
