"""python run_unlearn.py [--model=ENMF] [--dataset=ml-100k] [--unlearner=alteraser] [--key=value ...]"""
from recbole_unlearn.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
