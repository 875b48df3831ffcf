"""Synthetic Hume-Vidmimic2-shaped datasets whose signal rewards the paper's ideas.

Generative model (one draw per clip, all from one seeded numpy Generator):

* Labels: six intensities as *rater fractions*. Each clip has 3-10 raters; a latent
  intensity mu_e ~ Beta(0.5, 2.2) per emotion (Joy, Amusement, Excitement share a common
  factor; Admiration and Determination too) and each rater votes with probability mu_e,
  so y_e = votes / raters: sparse, many exact zeros, values on a 1/n grid.
* Time: a clip lasts D seconds (lognormal, median ~3 s here, clipped to [1.5, 12]).
  The mimicry shows mostly in one temporal segment: an envelope e(u) over normalised time
  u in [0, 1] that is 1 inside [onset, offset] (onset ~ U(0.55, 0.65), width ~ U(0.2, 0.3))
  and 0.1 elsewhere, with smooth edges. Whole-clip mean pooling dilutes it by the window
  fraction; per-segment pooling keeps it.
* Video features (organiser "vit", (T, 384), 5 fps):
  x_v(t) = identity + 1.0 * e(t) * tanh(W_v s) + nuisance(t) + 0.8 * white noise, where
  s = 3 * (y - 0.15), identity is a per-clip constant (removable by temporal differencing),
  and nuisance is slow "talking" motion (AR(1), rho=0.9) inside the same subspace as the
  signal, so it cannot be filtered out by direction, only by *where in time* one looks.
* Audio features (organiser "wav2vec2", (T, 768), 50 Hz): the same structure with a
  stronger amplitude (1.8) and its own projection W_a: audio carries more than video.
* Text: a transcript of filler words plus emotion words, each emotion contributing
  Binomial(2, 0.3 * y_e) words from its lexicon: a weak signal.
* Corruption: ~20 % of clips have one modality badly corrupted (video 45 %, audio 35 %,
  text 20 %): video -> occlusion (no signal, 4x noise), audio -> silence (a near-constant
  silence embedding), text -> "[inaudible]" or unrelated words. Quality-aware fusion can
  learn to lower a corrupted modality's weight from its statistics.
* Splits: 50 % train, 25 % valid, 25 % test (test has no CSV; its files exist).

Realism (`realism=True`, the knobs in `Realism`): a harder world shaped like real encoder
features (CLIP / wav2vec2). Off by default, and then everything above is drawn exactly as
before, bit for bit. Its draws come from generators of their own (seeded from the dataset
seed), so a realism dataset keeps the default one's splits, clip seeds, windows and
corruptions; on top it adds:

* Non-zero per-dimension means: each modality has a fixed offset vector, N(0, 1.5^2) per
  dimension (drawn once per dataset), added to every frame.
* Loud dimensions: 1.5 % of each modality's dimensions, at least 3 (video 6 of 384, audio
  12 of 768), are multiplied by a factor log-uniform in [10, 100]. The factor applies to the
  whole feature (signal + noise + offsets), as with wav2vec2's outlier dimensions, so these
  few dimensions dominate raw distances and variance; per-dimension standardisation undoes it.
* Persons: ceil(N / 4) identities, each in 4 clips, assigned at random (so one person
  appears in several splits). Each identity has its own offset vector per modality,
  0.75 * z @ B with z ~ N(0, I_8) and B a fixed (8, D) matrix of N(0, 1/8) entries: RMS
  0.75 per dimension (1.5x the per-clip identity, which stays, and larger than the signal),
  along 8 directions per modality, as a person's look or voice varies along a few principal
  directions. Added to every frame (not to a silenced audio clip): a clip's mean is
  dominated by who it is, not by what it shows. (Full-rank offsets of that size would bury
  the signal: ridge r <= 0.08.) `ClipSpec.identity` records the person (None in the default
  world, where identity is per clip).
* Long tail of lengths: 2 % of the clips (at least 1 whenever N >= 50) last 60-120 s
  (log-uniform) instead of ~3 s; the emotion window keeps its fraction of the clip. A 120 s
  clip's audio is 6000 x 768 float32 = 18 MB.
* Sparser labels: each label is additionally 0 with probability 0.15 (an emotion no rater
  saw), on top of the rater-fraction zeros; the features follow the sparser labels.
* Media (`media=True`): mp4s are rendered with the duration capped at 12 s (the default
  world's longest clip), the same labels and window in normalised time; only the pickled
  features carry the long clips.

`ClipSpec` is the per-clip draw; the feature writer here and the media renderer
(`synth_media.py`) both render from it, so the two modes carry the same labels and timing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from emi_ray import EMOTIONS

VIDEO_FPS = 5.0
AUDIO_HZ = 50.0
VIT_DIM = 384
W2V_DIM = 768
BASE_AMPLITUDE = {"video": 1.0, "audio": 1.8}
CORRUPT_RATE = 0.2
MEDIA_MAX_SECONDS = 12.0  # the longest default clip; realism's long clips render this long

LEXICON = {
    "Admiration": ["wonderful", "impressive", "respect", "admire", "brilliant"],
    "Amusement": ["funny", "haha", "hilarious", "laugh", "silly"],
    "Determination": ["will", "must", "focus", "never", "fight"],
    "Empathic Pain": ["ouch", "hurts", "sorry", "poor", "pain"],
    "Excitement": ["wow", "amazing", "yes", "incredible", "awesome"],
    "Joy": ["happy", "love", "smile", "glad", "joy"],
}
FILLER = ["the", "and", "so", "well", "okay", "i", "you", "it", "this", "that", "um", "like", "just"]


@dataclass
class ClipSpec:
    vid: int
    split: str  # train | valid | test
    labels: np.ndarray  # (6,) float32 rater fractions
    duration: float  # seconds
    onset: float  # fraction of the clip where the emotion starts showing
    offset: float
    corrupt: str | None  # video | audio | text | None
    seed: int  # per-clip seed for rendering noise
    identity: int | None = None  # person shared by several clips (realism); None: one per clip


@dataclass(frozen=True)
class Realism:
    """The knobs of the realism world (module doc); `Realism()` is what `realism=True` means."""

    mean_sd: float = 1.5  # per-dimension offset of each modality ~ N(0, mean_sd^2)
    loud_fraction: float = 0.015  # share of dimensions scaled up ...
    loud_min: int = 3  # ... at least this many
    loud_scale: tuple[float, float] = (10.0, 100.0)  # log-uniform factor range
    clips_per_identity: int = 4
    identity_sd: float = 0.75  # per-identity offset, RMS per dimension (default per-clip identity: 0.5)
    identity_rank: int = 8  # persons differ along this many directions per modality
    long_fraction: float = 0.02  # share of clips in the long tail ...
    long_min_videos: int = 50  # ... at least one whenever the dataset has this many clips
    long_seconds: tuple[float, float] = (60.0, 120.0)  # log-uniform duration of a long clip
    absent_rate: float = 0.15  # extra exact-zero labels


def as_realism(realism: bool | Realism | None) -> Realism | None:
    """`True` -> `Realism()`, `False`/None -> None (the default world), a `Realism` as is."""
    if isinstance(realism, Realism):
        return realism
    return Realism() if realism else None


def envelope(u: np.ndarray, onset: float, offset: float, floor: float = 0.1) -> np.ndarray:
    """1 inside [onset, offset], `floor` elsewhere, with ~5 % smooth edges."""
    edge = 0.05
    rise = np.clip((u - onset + edge) / edge, 0, 1)
    fall = np.clip((offset + edge - u) / edge, 0, 1)
    return floor + (1 - floor) * np.minimum(rise, fall)


def make_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    groups = np.array([1, 0, 1, 2, 0, 0])  # 0: joy-like, 1: admiration-like, 2: pain
    shared = rng.beta(0.5, 2.2, size=(n, 3))
    own = rng.beta(0.5, 2.2, size=(n, 6))
    mu = np.clip(0.6 * shared[:, groups] + 0.4 * own, 0, 1)
    raters = rng.integers(3, 11, size=(n, 1))
    votes = rng.binomial(np.broadcast_to(raters, mu.shape), mu)
    return (votes / raters).astype(np.float32)


def make_specs(n_videos: int, seed: int = 0, realism: bool | Realism = False) -> list[ClipSpec]:
    """The per-clip draws; `realism` adds identities, long clips and sparser labels (module doc)."""
    specs = _default_specs(n_videos, seed)
    world = as_realism(realism)
    return _realistic_specs(specs, seed, world) if world else specs


def _default_specs(n_videos: int, seed: int) -> list[ClipSpec]:
    rng = np.random.default_rng(seed)
    labels = make_labels(rng, n_videos)
    splits = np.array(["train"] * n_videos, dtype=object)
    order = rng.permutation(n_videos)
    n_train, n_valid = n_videos // 2, n_videos // 4
    splits[order[n_train : n_train + n_valid]] = "valid"
    splits[order[n_train + n_valid :]] = "test"
    specs = []
    for i in range(n_videos):
        duration = float(np.clip(rng.lognormal(np.log(3.0), 0.35), 1.5, 12.0))
        onset = float(rng.uniform(0.55, 0.65))
        width = float(rng.uniform(0.2, 0.3))
        corrupt = None
        if rng.random() < CORRUPT_RATE:
            corrupt = str(rng.choice(["video", "audio", "text"], p=[0.45, 0.35, 0.2]))
        specs.append(
            ClipSpec(
                vid=i + 1,
                split=str(splits[i]),
                labels=labels[i],
                duration=duration,
                onset=onset,
                offset=min(onset + width, 0.98),
                corrupt=corrupt,
                seed=int(rng.integers(2**31)),
            )
        )
    return specs


def _realistic_specs(specs: list[ClipSpec], seed: int, world: Realism) -> list[ClipSpec]:
    """Identities, the long tail of durations and sparser labels, from a generator of their own."""
    rng = np.random.default_rng([seed, 0x5EA1])
    n = len(specs)
    identities = rng.permutation(n) // world.clips_per_identity
    n_long = int(round(world.long_fraction * n))
    if n >= world.long_min_videos:
        n_long = max(n_long, 1)
    long_ids = set(rng.choice(n, size=n_long, replace=False).tolist()) if n_long else set()
    lo, hi = np.log(world.long_seconds[0]), np.log(world.long_seconds[1])
    out = []
    for i, s in enumerate(specs):
        labels = np.where(rng.random(6) < world.absent_rate, 0.0, s.labels).astype(np.float32)
        duration = float(np.exp(rng.uniform(lo, hi))) if i in long_ids else s.duration
        out.append(replace(s, labels=labels, duration=duration, identity=int(identities[i])))
    return out


@dataclass(frozen=True)
class EncoderWorld:
    """One modality's realism constants: the per-dimension mean, the loud-dimension scale and
    where identity offsets come from (module doc)."""

    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,), 1 except the loud dimensions
    identity_basis: np.ndarray  # (rank, dim): a person's offset is identity_sd * z @ basis, z ~ N(0, I)
    identity_sd: float
    seed: int
    salt: int

    @classmethod
    def draw(cls, seed: int, modality: str, dim: int, world: Realism) -> EncoderWorld:
        salt = 1 if modality == "video" else 2
        rng = np.random.default_rng([seed, 0x3EA2, salt])
        mean = world.mean_sd * rng.standard_normal(dim)
        k = max(world.loud_min, int(round(world.loud_fraction * dim)))
        scale = np.ones(dim)
        lo, hi = np.log(world.loud_scale[0]), np.log(world.loud_scale[1])
        scale[rng.choice(dim, size=k, replace=False)] = np.exp(rng.uniform(lo, hi, size=k))
        basis = rng.standard_normal((world.identity_rank, dim)) / np.sqrt(world.identity_rank)
        return cls(mean.astype(np.float32), scale.astype(np.float32), basis, world.identity_sd, seed, salt)

    def identity_offset(self, identity: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0x1D, identity, self.salt])
        z = rng.standard_normal(len(self.identity_basis))
        return (self.identity_sd * z @ self.identity_basis).astype(np.float32)

    def apply(self, x: np.ndarray, spec: ClipSpec, modality: str) -> np.ndarray:
        """(x + person offset + mean) * scale, for one clip's (T, dim) features."""
        offset = self.mean
        silenced = spec.corrupt == modality == "audio"
        if spec.identity is not None and not silenced:
            offset = offset + self.identity_offset(spec.identity)
        return ((x + offset) * self.scale).astype(np.float32)


def projection(seed: int, dim: int, salt: int) -> np.ndarray:
    w = np.random.default_rng([seed, salt]).standard_normal((6, dim)).astype(np.float32)
    return w / np.linalg.norm(w, axis=1, keepdims=True) * np.sqrt(dim / 6)


def sequence_features(
    spec: ClipSpec, modality: str, rate: float, dim: int, proj: np.ndarray
) -> np.ndarray:
    """A (T, dim) float32 feature sequence for one clip and one modality (see module doc)."""
    rng = np.random.default_rng([spec.seed, 1 if modality == "video" else 2])
    t = max(2, int(round(spec.duration * rate)))
    u = (np.arange(t) + 0.5) / t
    s = 3.0 * (spec.labels - 0.15)
    signal = np.tanh(s @ proj / np.sqrt(dim / 6))  # (dim,), in the label subspace
    amp = BASE_AMPLITUDE[modality]
    noise_scale = 0.8
    if spec.corrupt == modality:
        amp, noise_scale = 0.0, (3.2 if modality == "video" else 0.05)
    env = envelope(u, spec.onset, spec.offset)[:, None]
    z = np.empty((t, 6), np.float32)  # slow nuisance in the signal subspace
    z[0] = rng.standard_normal(6)
    steps = max(1.0, rate / VIDEO_FPS)  # same time constant at any rate
    rho = 0.9 ** (1 / steps)
    for k in range(1, t):
        z[k] = rho * z[k - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(6)
    nuisance = np.tanh(z @ proj / np.sqrt(dim / 6)) * 0.9
    identity = 0.5 * rng.standard_normal(dim)
    x = identity + amp * env * signal + nuisance + noise_scale * rng.standard_normal((t, dim))
    if spec.corrupt == modality and modality == "audio":
        x = 0.05 * rng.standard_normal((t, dim)) - 0.5  # a silence embedding
    return x.astype(np.float32)


def transcript(spec: ClipSpec) -> str:
    rng = np.random.default_rng([spec.seed, 3])
    if spec.corrupt == "text":
        return "[inaudible]" if rng.random() < 0.5 else " ".join(rng.choice(FILLER, 6))
    words = list(rng.choice(FILLER, int(rng.integers(4, 10))))
    for e, y in zip(EMOTIONS, spec.labels):
        words += list(rng.choice(LEXICON[e], rng.binomial(2, 0.3 * float(y))))
    rng.shuffle(words)
    return " ".join(words)
