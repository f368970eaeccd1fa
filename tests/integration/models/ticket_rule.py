"""A small MLflow pyfunc (logged as "models from code", so any process can load it) standing in for a
trained escalation model in the serving tests: it reads the request text and a Feast feature, and its
``model_config`` makes it good, different, or bad in one of the ways a real model can be bad."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd


class TicketRule(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.kind = (context.model_config or {}).get("kind", "good")
        if self.kind == "unloadable":
            raise RuntimeError("weights file is corrupt")

    def predict(self, context, model_input, params=None):  # noqa: ARG002
        n = len(model_input)
        if self.kind == "raises":
            raise ValueError("index out of range in the head")
        if self.kind == "nan":
            return pd.DataFrame({"escalation_probability": np.full(n, np.nan), "escalate": False})
        if self.kind == "out_of_range":
            return pd.DataFrame({"escalation_probability": np.full(n, 1.7), "escalate": True})
        urgent = model_input["body"].str.contains("down", case=False).to_numpy()
        busy = np.nan_to_num(model_input["tickets_30d"].to_numpy(dtype="float64")) / 100
        base = 0.6 if self.kind == "good_v2" else 0.4
        p = np.clip(base + np.where(urgent, 0.2, -0.2) + busy, 0.01, 0.99)
        return pd.DataFrame({"escalation_probability": p, "escalate": p >= 0.5})


mlflow.models.set_model(TicketRule())
