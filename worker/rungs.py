"""ASHA's stop-or-continue at each rung of a trial training in this process: the decision
is ``models.sweeps.rungs``'."""

from __future__ import annotations

from typing import Any

import keras

from models.db import transaction
from models.sweeps import rungs


class RungCallback(keras.callbacks.Callback):
    """At the end of each epoch that closes an ASHA rung: the trial's objective goes to the
    sweep, and the trial trains on (in this process, no restart) or stops there."""

    def __init__(self, database_url: str, asha: rungs.AshaTrial, log_to: Any) -> None:
        super().__init__()
        self.database_url = database_url
        self.asha = asha
        self.log_to = log_to

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        if done not in self.asha.rung_epochs:
            return
        value = (logs or {}).get(self.asha.metric)
        if value is None:
            return
        with transaction(self.database_url) as session:
            go_on = rungs.continues(session, self.asha, done, float(value))
        rung = self.asha.rung_epochs.index(done) + 1
        if go_on:
            self.log_to("info", f"ASHA rung {rung} ({done} epochs): promoted, training on")
        else:
            self.log_to(
                "info",
                f"ASHA rung {rung} ({done} epochs): {self.asha.metric} {float(value):.4g} is "
                "not among the best of the rung; the trial stops here",
            )
            self.model.stop_training = True
