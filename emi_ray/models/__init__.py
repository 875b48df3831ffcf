"""Stage-II neural model: TCN + segment pooling (video), gated BiLSTM (audio), QAM fusion,
Transformer regressor. `create_model(cfg.model, dims)` is the entry point."""

from emi_ray.models.emi import EmiModel, create_model

__all__ = ["EmiModel", "create_model"]
