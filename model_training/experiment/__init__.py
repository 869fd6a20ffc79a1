"""The experiment head: what a measurement would find, from reported Curie and Néel temperatures.

The Materials Project head predicts MP's DFT label; this head predicts, for a magnetic
compound, whether experiment finds it ferromagnetic (ferrimagnets included) or
antiferromagnetic, and at what temperature it orders. It reads the same 119-vector but never
its density (the literature sources give none). Stages, one module each: the snapshot and its
cleaning (`data`), the network (`network`), the run that scores it against baselines
(`evaluate`), its card (`card`), its export (`export`) and its command (`run`).
"""
