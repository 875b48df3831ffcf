"""Stage I of the paper (§3.3): contrastive modality-text alignment.

prompts.py  the FACS AU table and the eq. (1) prompt builder
corpus.py   the affect corpus layout (affect.csv) and its validation
synth.py    a synthetic affect corpus drawn by the synthetic face/voice generator
sources/    converters from AffectNet, Aff-Wild2, Hume-Vidmimic2 to the affect corpus (emi-ray corpus)
features.py frozen-encoder features of a corpus, computed once and cached
input_stats.py the heads' input normalisation (statistics of the training items)
loss.py     weighted symmetric InfoNCE (eq. 2), negatives gathered across workers
model.py    projection heads (+ optional learnable temperature)
loop.py     the Ray-agnostic per-worker pretrain loop
trainer.py  Ray Train wiring and the run directory
apply.py    apply trained heads (after the run's input normalisation) to a feature store (use in stage II)
"""
