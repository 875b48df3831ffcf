"""Hyper-parameter search: Ray Tune + Optuna over named search spaces."""
