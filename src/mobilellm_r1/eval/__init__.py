"""Evaluation: benchmark tasks, answer grading, safe code execution, pass@k."""
