"""The density estimator: a compound's density from its composition, for formulas sent alone.

Stages, one module each: the network (`network`), the run that scores it against baselines
and measures what an estimated density does to the Materials Project head (`evaluate`), its
card (`card`), its export (`export`) and its command (`run`). It reads the Materials Project
snapshot (`model_training.mp.data`).
"""
