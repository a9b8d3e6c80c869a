"""Data curation for the MobileLLM-R1 recipe (arXiv 2509.24945): heuristic and classifier quality
filters (`filters`), Ask-LLM scoring (`ask_llm`), exact / MinHash / semantic deduplication (`dedup`)
and the RankMe effective-rank metric (`rankme`)."""
