"""Stage-II models: the paper's (TCN + segment pooling for video, gated BiLSTM for audio, QAM
fusion, Transformer regressor) and the leaderboard's other designs (text_anchor, lstm_mlp).
`create_model(cfg.model, dims)` is the entry point; `cfg.model.arch` picks the design."""

from emi_ray.models.emi import EmiModel, create_model

__all__ = ["EmiModel", "create_model"]
