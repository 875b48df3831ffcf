"""Converters from public affect datasets to the stage-I affect corpus (`emi-ray corpus`).

inputs.py     reading a source folder as untrusted input (paths stay inside, regular files, caps)
writer.py     the output corpus: target check, one part per conversion, the merged affect.csv, counts
affectnet.py  AffectNet's annotation CSV + images (face crops)
affwild2.py   Aff-Wild2's per-video VA / EXPR / AU files + cropped-aligned frames
vidmimic.py   Hume-Vidmimic2's split CSVs + audio (prompts from the six intensities)
"""
