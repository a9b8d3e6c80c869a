"""Data: sources -> tokenized shards (`sources.py`, `shards.py`), weighted multi-source
mixtures per training phase (`mixture.py`, `recipes.py`), and the embedded synthetic
reasoning corpus (`synth/`)."""
