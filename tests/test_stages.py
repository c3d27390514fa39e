"""scripts/stages: each stage fails exactly the scenarios its design cannot pass.

The table below is the lesson of the stages (docs/TUTORIAL.md, "The stages"): it is
what ``python scripts/stages/check.py`` prints, and this test keeps the two the same.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = Path(__file__).parent.parent / "scripts" / "stages"

P, F = True, False
#                      1 blocking 2 threads 3 select 4 buffers 5 interest 6 muxserver
EXPECTED = {
    "one byte per send":  (P, P, F, P, P, P),
    "pipelined burst":    (P, P, F, P, P, P),
    "slow reader":        (F, P, F, P, P, P),
    "memory bound":       (P, P, P, F, P, P),
    "half close":         (P, P, P, F, P, P),
    "reset":              (P, P, F, P, P, P),
    "idle timeout":       (F, F, F, F, P, P),
    "no busy loop":       (P, P, P, F, P, P),
    "two clients":        (F, P, F, P, P, P),
}

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="check.py reads /proc")


@pytest.mark.timeout(600)
def test_each_stage_fails_the_rows_its_design_cannot_pass():
    result = subprocess.run([sys.executable, str(STAGES / "check.py"), "--json", "--lang", "en"],
                            capture_output=True, text=True, timeout=570)
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    stages = list(results)
    assert len(stages) == 6 and stages[-1] == "6 muxserver"
    seen = {scenario: tuple(results[stage][scenario][0] for stage in stages)
            for scenario in EXPECTED}
    reasons = "\n".join(f"{stage} / {scenario}: {reason}"
                        for stage in stages for scenario, (_, reason) in results[stage].items())
    assert seen == EXPECTED, reasons
    assert all(reason for stage in stages for _, reason in results[stage].values())


def test_the_table_names_the_pitfall_of_each_failure():
    # the one-line reasons a learner reads: the ones the tutorials quote
    result = subprocess.run([sys.executable, str(STAGES / "check.py"), "--stage", "3", "--lang", "en",
                             "--scenario", "pipelined burst", "--scenario", "reset"],
                            capture_output=True, text=True, timeout=110)
    assert "FAIL  pipelined burst: the server read every byte" in result.stdout
    assert "FAIL  reset: the server died: ConnectionResetError" in result.stdout


def test_every_stage_is_small_and_bilingual():
    for path in sorted(STAGES.glob("stage*.py")):
        text = path.read_text()
        assert len(text.splitlines()) <= 150, path.name
        assert "(es)" in text, f"{path.name} has no Spanish comments"
