"""Feature extraction: decoding media (PyAV), encoders, and the Ray Data pipeline."""
