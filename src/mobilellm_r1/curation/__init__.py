"""Data curation for the MobileLLM-R1 recipe (arXiv 2509.24945): heuristic and classifier quality
filters (`filters`), Ask-LLM scoring (`ask_llm`), exact / MinHash / semantic deduplication (`dedup`),
probing sets (`probe_sets`), leave-one-out and influence scores (`loo`, `influence`, `influence_run`,
`influence_job`), mixture weights from them (`mixing`) and data-model co-evolution (`coevolve`)."""
