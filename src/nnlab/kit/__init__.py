"""The run kit: what every run gets, written once.

``rundir`` reads and writes a run directory (config, JSON files, the environment, the best
model rebuilt weights-only); ``run`` starts or resumes a run, trains a model through the one
place that builds a ``Learner`` (optimizer, schedule, progress, metrics log, best/last
checkpoints with resume state, early stopping, time budget, LR log) and writes
``summary.json``; ``api`` is the same kit for your own ``nn.Module`` (``nnlab.fit``).
Every kind in ``nnlab.kinds`` trains through ``run.train_model``.
"""
