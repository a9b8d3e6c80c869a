"""benchmarks/provenance.py: the command a result JSON records is the script's path from the
repository root, also for scripts in benchmarks/diag."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import provenance

BENCH = provenance.RESULTS.parent


def test_command_names_the_script_from_the_repository_root(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(BENCH / "diag" / "profile_train.py"), "950m:8", "--top", "3"])
    header = provenance.result_header("profile_train", device="cpu")
    assert header["command"] == "python benchmarks/diag/profile_train.py 950m:8 --top 3"
    monkeypatch.setattr(sys, "argv", [str(BENCH / "fp8_loss.py")])
    assert provenance.result_header("fp8_loss", device="cpu")["command"] == "python benchmarks/fp8_loss.py"
