"""emi-ray: Emotional Mimicry Intensity estimation, from raw clips to a submission, on Ray."""

__version__ = "0.1.0"

EMOTIONS = ("Admiration", "Amusement", "Determination", "Empathic Pain", "Excitement", "Joy")
MODALITIES = ("video", "audio", "text")
VERBOSE_ENV = "EMI_RAY_VERBOSE"  # set (by `emi-ray --verbose`): Ray's own log lines reach the console
