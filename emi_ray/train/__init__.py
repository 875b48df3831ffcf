"""Stage-II training: the shared core (loop.py), Ray Train wiring (trainer.py), prediction."""
