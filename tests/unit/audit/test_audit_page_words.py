"""What the Audit page says, without a browser: the progress text of each stage of an audit and the
command it shows when the app may not read files by path."""

from __future__ import annotations

import shlex

from extraction.audit.inputs import READING_TEXTS
from extraction.audit.report import SAMPLING_ROUND
from extraction.views.audit import audit_command, progress_text


def test_each_stage_has_its_words_and_fraction():
    assert progress_text(READING_TEXTS, 250_000_000, 1_000_000_000) == (
        0.25,
        "Reading the texts file: 250.0 of 1,000.0 MB",
    )
    assert progress_text(SAMPLING_ROUND, 2, 5) == (0.4, "Sampling round 2 of at most 5")
    assert progress_text("re-extracting", 1000, 1000) == (1.0, "Re-extracting the sampled texts: 1,000/1,000")
    assert progress_text("forensics", 3, 12) == (0.25, "Forensics: hypothesis 4 of 12")
    assert progress_text("re-extracting", 0, 0)[0] == 1.0  # nothing to do is done


def test_the_command_names_the_sample_and_the_target():
    command = shlex.split(audit_command("my model", "/data/states.npy", "texts.txt", 1000, 0.005))
    assert command[:4] == ["python", "-m", "extraction", "audit"]
    assert command[command.index("--model") + 1] == "my model"
    assert command[command.index("--sample") + 1] == "1000"
    assert command[command.index("--max-corrupted") + 1] == "0.005"
    assert "--sample" not in audit_command("m")  # 0 / None: the command checks every row
