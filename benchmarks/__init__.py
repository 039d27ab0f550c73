"""The benchmark suite of recbole_unlearn: the papers' tables over seeds, sequential requests,
scaling, plots and the generated ``BENCHMARKS.md``.  Entry point: ``python benchmarks/run.py``.

Modules: :mod:`benchmarks.common` (experiment keys, configs, resume state, progress bar),
:mod:`benchmarks.tables` (consistency / accuracy / efficiency tables),
:mod:`benchmarks.sequential` (requests applied one after another),
:mod:`benchmarks.scaling` (time vs request size and dataset size),
:mod:`benchmarks.plots` and :mod:`benchmarks.document` (figures and ``BENCHMARKS.md``).
"""
