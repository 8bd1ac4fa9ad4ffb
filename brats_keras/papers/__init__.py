"""What each paper's experiment reports beyond its config and models: its scoring and its tables.

One module per paper (``paper1`` … ``paper5``); the experiment scripts in ``experiments/`` declare the
run (:mod:`brats_keras.runner`) and call these for ``table.md`` and the paper-specific scores.
"""
