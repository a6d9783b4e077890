"""Sweeps (``kind: "sweep"``): the trials planned at submit (:mod:`.plan`), scheduled as
child jobs as earlier ones end (:mod:`.schedule`), and ASHA's decisions at each rung
(:mod:`.rungs`). The search math is Optuna's (RandomSampler, SuccessiveHalvingPruner,
through ask-and-tell and rebuilt studies); the state is in our tables."""
