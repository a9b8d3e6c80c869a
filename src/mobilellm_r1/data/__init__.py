"""Data: text sources and their one format dispatch (`sources.py`, over the `FORMATS` registry of
`formats/`, one module per format), JSONL record files read and
written atomically (`records.py`), tokenized shards (`shards.py`), weighted multi-source mixtures
per training phase (`mixture.py`, `recipes.py`), SFT conversations and their packed loader
(`conversations.py`, `packing.py`), and the embedded synthetic reasoning corpus (`synth/`)."""
