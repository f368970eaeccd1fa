"""MLflow pyfunc wrapper: DataFrame(subject, body, <features>) -> escalation_probability."""

from __future__ import annotations

import json
import os
from typing import Any

import mlflow.pyfunc


class EscalationPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def load_context(self, context: Any) -> None:
        import numpy as np
        import torch
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from training.model import EscalationModel

        path = context.artifacts["model_dir"]
        self.meta = json.loads(open(os.path.join(path, "escalation.json")).read())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        conf = AutoConfig.from_pretrained(path)
        encoder = AutoModel.from_config(conf, add_pooling_layer=False, attn_implementation="sdpa")
        self.model = EscalationModel(encoder, len(self.meta["feature_columns"]), self.meta["dropout"])
        self.model.load_state_dict(torch.load(os.path.join(path, "weights.pt"), map_location="cpu"))
        self.model.eval()
        self.mean = np.asarray(self.meta["mean"], dtype=np.float32)
        self.std = np.asarray(self.meta["std"], dtype=np.float32)

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import numpy as np
        import pandas as pd
        import torch

        df = model_input
        texts = df[self.meta["text_fields"][0]].fillna("").astype(str)
        for f in self.meta["text_fields"][1:]:
            texts = texts + " . " + df[f].fillna("").astype(str)
        cols = self.meta["feature_columns"]
        missing = [c for c in cols if c not in df.columns]
        if missing:  # a frame without the features the model was trained on cannot be scored fairly
            raise KeyError(f"model input lacks feature columns {missing}")
        # a missing value is 0 (no activity in the window), as in training (training.loop.prepare)
        feats = df[cols].astype("float64").fillna(0.0).to_numpy()
        feats = ((feats - self.mean) / self.std).astype(np.float32)
        enc = self.tokenizer(
            list(texts), truncation=True, max_length=self.meta["max_length"], padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = self.model(enc["input_ids"], enc["attention_mask"], torch.from_numpy(feats))
        prob = torch.sigmoid(logits.float()).numpy()
        return pd.DataFrame({"escalation_probability": prob, "escalate": prob >= 0.5})
