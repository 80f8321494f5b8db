"""Progress on every long read of an audit (the streamed texts scan, the sampling rounds, the
re-extraction), one scan of the texts file however many rounds, and nothing written when an audit
is interrupted."""

from __future__ import annotations

from extraction.audit import audit_states
from extraction.audit.inputs import READING_TEXTS
from extraction.audit.report import SAMPLING_ROUND
from extraction.audit.sampling import RowSample
from extraction.cli import main
from extraction.storage.lazy_states import open_states
from extraction.storage.safetensors_writer import write_safetensors_atomic
from extraction.storage.text_stream import TextSource
from extraction.texts import texts_sha256
from tests.stores import partly_right_store

N = 300  # texts in the store


class CountingSource(TextSource):
    """A TextSource that counts its scans for a sample."""

    scans = 0

    def sample(self, indices, progress=None, hash_texts=True):
        self.scans += 1
        return super().sample(indices, progress, hash_texts)


def _store(loaded, tmp_path, rows_made):
    return partly_right_store(loaded, tmp_path, N, rows_made)


def test_progress_reports_the_scan_each_round_and_the_reextraction(tiny_llama, tmp_path):
    # rows_to_show(0.2) = 17 clean rows: rounds of 4, 8, 16 and 17 rows, all exact.
    texts_file, states_file = _store(tiny_llama, tmp_path, RowSample(17, 0).draw(N))
    source = CountingSource(texts_file)
    calls: list[tuple[str, int, int]] = []
    report = audit_states(
        tiny_llama,
        source,
        open_states(states_file),
        layer=-1,
        sample=4,
        max_corrupted=0.2,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    assert report.n_checked == 17 and report.sample.rounds == 4
    assert source.scans == 1  # the rows of every round found in one scan of the file
    size = texts_file.stat().st_size
    scan = [(done, total) for stage, done, total in calls if stage == READING_TEXTS]
    assert scan[-1] == (size, size) and all(total == size for _, total in scan)
    rounds = [(done, total) for stage, done, total in calls if stage == SAMPLING_ROUND]
    assert rounds == [(1, 4), (2, 4), (3, 4), (4, 4)]
    stages = [stage for stage, _, _ in calls]
    assert stages.index(READING_TEXTS) < stages.index(SAMPLING_ROUND) < stages.index("re-extracting")
    reextracting = [(done, total) for stage, done, total in calls if stage == "re-extracting"]
    assert reextracting[-1] == (17, 17)
    assert [total for _, total in reextracting] == sorted(total for _, total in reextracting)  # 4, 8, 16, 17


def test_a_one_round_audit_scans_once_and_reports_it(tiny_llama, tmp_path):
    texts_file, states_file = _store(tiny_llama, tmp_path, RowSample(8, 0).draw(N))
    source = CountingSource(texts_file)
    calls: list[str] = []
    audit_states(
        tiny_llama, source, open_states(states_file), layer=-1, sample=8, progress=lambda s, d, t: calls.append(s)
    )
    assert source.scans == 1 and READING_TEXTS in calls and SAMPLING_ROUND not in calls


def test_an_interrupted_audit_writes_no_report(tiny_llama, tmp_path, monkeypatch):
    texts_file, states_file = _store(tiny_llama, tmp_path, RowSample(8, 0).draw(N))
    out = tmp_path / "audit.json"

    def interrupted(stage, done, total):
        if stage == "re-extracting" and done > 0:
            raise KeyboardInterrupt

    import extraction.commands.audit as command

    real = command._progress_bars
    monkeypatch.setattr(command, "_progress_bars", lambda: (interrupted, real()[1]))
    args = ["audit", "--model", "tiny-random-llama", "--texts", str(texts_file), "--states", str(states_file)]
    assert main([*args, "--sample", "64", "--json", str(out)]) != 0  # "interrupted: no output was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["states.safetensors", "texts.txt"]


def test_a_streamed_file_is_hashed_when_the_store_records_a_hash(tiny_llama, tmp_path):
    texts_file, states_file = _store(tiny_llama, tmp_path, RowSample(8, 0).draw(N))
    stored = open_states(states_file).rows(range(N))
    texts = [text for _, text, _ in TextSource(texts_file).scan()]
    differs = "the texts differ from those the file was extracted from"
    for recorded, noted in ((texts_sha256(texts), False), (texts_sha256(texts[:-1]), True)):
        path = tmp_path / "hashed.safetensors"
        write_safetensors_atomic(path, {"h": stored}, {"texts_sha256": recorded}, overwrite=True)
        report = audit_states(tiny_llama, TextSource(texts_file), open_states(path), layer=-1, sample=8)
        assert any(differs in note for note in report.notes) is noted
