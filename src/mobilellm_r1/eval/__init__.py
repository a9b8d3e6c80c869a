"""Evaluation: benchmark tasks, answer grading, safe code execution, pass@k, held-out NLL and
RankMe (`rankme`, Eq. 8)."""
