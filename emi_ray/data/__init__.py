"""Dataset layout, feature store, synthetic data, batching."""
