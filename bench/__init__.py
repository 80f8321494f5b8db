"""Benchmark: extraction speed, useful FLOPs, cold start, peak memory and the app's comparison.

``python -m bench`` runs everything in one process (plus a few child processes for the
cold-start and memory figures) and prints a table; ``--json`` writes the figures. What
is measured, on the embedded model in float32 unless told otherwise:

* **throughput**: a seeded set of texts of 5-200 tokens (:func:`benchmark_texts`) is
  extracted with ``single`` and with every other strategy that is exact on this model
  (checked first on a small sample; the corrupted ones are listed, not timed). For each:
  real tokens per second, the ratio to ``single`` and the fraction of padded positions.
  ``single`` is timed on an evenly spread subset of the texts (every k-th by length,
  ``--single-texts``) because it is slow; its tokens/s is a rate, comparable as long
  as the subset has the same length spread.
* **useful FLOPs**: ``(2 P_body T_real + 2 d V N) / seconds`` with ``P_body`` the
  parameters outside the embeddings and ``lm_head`` (:func:`body_parameters`),
  ``T_real`` the real tokens, ``d`` the width, ``V`` the vocabulary and ``N`` the texts
  (``lm_head`` for the last token of each text). Attention scores and padding are not
  counted: they are work the result does not need. Reported as GFLOP/s and as a
  fraction of the sgemm rate measured in the same run (:func:`sgemm_gflops`).
* **exactness**: the rows of each timed run, on the texts ``single`` was timed on,
  against ``single``'s rows: the minimum cosine over texts and layers must be at least
  :data:`BENCH_EXACT_COSINE`. No speed is bought with wrong answers.
* **cold start** (child processes): ``import extraction`` and ``load_model`` with the
  converted cache present, and with it absent (an empty temporary ``XDG_CACHE_HOME``).
* **peak memory** (child processes, ``ru_maxrss`` from ``wait4``): the ``extract``
  command on 500 and 2,000 texts against the model plus one batch (a run on a few texts)
  plus the result rows.
* **the app's comparison**: ``compare_strategies`` over every strategy on
  :data:`~extraction.samples.SAMPLE_TEXTS`, split into extraction and metrics time.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from extraction.extract import ExtractionResult
    from extraction.models import LoadedModel
    from extraction.texts import TokenizedTexts

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Stricter than the verdict's exact threshold: the benchmark only times float32 runs
#: that reproduce ``single`` to within rounding.
BENCH_EXACT_COSINE = 0.99999
DEFAULT_TEXTS = 256
DEFAULT_MIN_TOKENS = 5
DEFAULT_MAX_TOKENS = 200
DEFAULT_SINGLE_TEXTS = 48
#: Texts the exactness pre-check runs on (spread over the lengths).
CHECK_TEXTS = 16
DEFAULT_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_TOKENS = 1024
MEMORY_TEXT_COUNTS = (500, 2000)
#: Texts in the memory run that stands for "the model plus one batch".
MEMORY_BASELINE_TEXTS = 64
#: Longest text of the memory runs: the rows, not the text lengths, grow with N; shorter
#: texts keep the 2,000-text run to minutes.
MEMORY_MAX_TOKENS = 64

_WORDS_SOURCE_EXTRA = (
    "a probe reads the hidden state of the last token and learns a direction that separates the classes, "
    "while padding shifts positions, hides tokens behind a mask, or lets texts see each other in one row"
)


@dataclass
class StrategyTiming:
    """One strategy timed on the benchmark texts."""

    name: str
    texts: int
    real_tokens: int
    computed_positions: int
    forward_passes: int
    seconds: float
    tokens_per_second: float
    pad_fraction: float
    useful_gflops: float  # useful FLOPs / seconds / 1e9
    sgemm_fraction: float  # useful_gflops / the sgemm rate of the same run
    ratio_to_single: float | None = None
    min_cosine_vs_single: float | None = None  # over the texts single was timed on, every layer
    exact: bool | None = None  # min_cosine_vs_single >= the run's exact_cosine
    capture: str = ""
    load_average: float | None = None  # 1-minute load average when the run ended (other work on the machine)


@dataclass
class BenchmarkReport:
    """Everything one run measured; ``to_dict`` is the JSON written by ``--json``."""

    environment: dict
    settings: dict
    texts: dict  # count, token lengths (min, mean, max), total tokens
    sgemm_gflops: float
    body_parameters: int
    timings: list[StrategyTiming] = field(default_factory=list)
    not_timed: dict[str, str] = field(default_factory=dict)  # strategy -> why (not exact on the check sample)
    cold_start: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    app_comparison: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)

    def best(self) -> StrategyTiming | None:
        """The fastest exact strategy other than ``single``."""
        batched = [t for t in self.timings if t.name != "single" and t.exact]
        return max(batched, key=lambda t: t.tokens_per_second) if batched else None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["best"] = self.best().name if self.best() else None
        return data


# --- the texts -----------------------------------------------------------------------


def _word_pool() -> list[str]:
    from extraction.samples import SAMPLE_TEXTS

    words = " ".join([*SAMPLE_TEXTS, _WORDS_SOURCE_EXTRA]).split()
    return sorted(set(words))


def benchmark_texts(
    tokenizer,
    count: int = DEFAULT_TEXTS,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    seed: int = 0,
) -> list[str]:
    """``count`` texts whose token lengths are drawn uniformly from ``[min_tokens, max_tokens]``.

    Words from the sample texts are drawn with ``random.Random(seed)``; each text is the
    decoded first ``target`` tokens of such a word sequence, shortened word by word if
    re-tokenizing it gives more than ``max_tokens``. Deterministic for a given tokenizer
    and seed; nothing is downloaded.
    """
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens, got {min_tokens} and {max_tokens}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    pool = _word_pool()

    def length(text: str) -> int:
        return len(tokenizer(text)["input_ids"])

    texts = []
    for _ in range(count):
        target = rng.randint(min_tokens, max_tokens)
        words = rng.choices(pool, k=target + 8)
        ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:target]
        text = tokenizer.decode(ids).strip()
        while length(text) > max_tokens and " " in text:
            text = text.rsplit(" ", 1)[0]
        while length(text) < min_tokens:
            text = f"{text} {rng.choice(pool)}"
        texts.append(text)
    return texts


def spread_subset(lengths: Sequence[int], size: int) -> list[int]:
    """``size`` indices spread evenly over the texts sorted by length (shortest and longest
    included), in ascending index order; all indices when ``size >= len(lengths)``."""
    n = len(lengths)
    if size >= n:
        return list(range(n))
    if size < 1:
        raise ValueError(f"subset size must be at least 1, got {size}")
    by_length = sorted(range(n), key=lambda i: (lengths[i], i))
    if size == 1:
        return [by_length[n // 2]]
    picks = {by_length[round(k * (n - 1) / (size - 1))] for k in range(size)}
    return sorted(picks)


# --- compute rates -------------------------------------------------------------------


def sgemm_gflops(size: int = 2048, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Best-of-``repeats`` rate of ``torch.mm`` on two ``size x size`` float32 matrices on
    ``device``: ``2 size^3 / seconds / 1e9`` (on CUDA, synchronized around each product)."""
    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device)
    b = torch.randn(size, size, generator=generator).to(device)
    out = torch.empty(size, size, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.mm(a, b, out=out)  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def body_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the embeddings and ``lm_head``: the per-token matmul work of the
    body is ``2 x`` this many FLOPs (a tied ``lm_head`` is counted once, as an embedding)."""
    excluded: set[int] = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            excluded.update(id(p) for p in module.parameters())
    head = model.get_output_embeddings()
    if head is not None:
        excluded.update(id(p) for p in head.parameters())
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if id(parameter) not in excluded and id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def useful_flops(body_params: int, hidden_size: int, vocab_size: int, real_tokens: int, num_texts: int) -> float:
    """``2 P_body T_real + 2 d V N``: the body for every real token, ``lm_head`` once per text."""
    return 2.0 * body_params * real_tokens + 2.0 * hidden_size * vocab_size * num_texts


# --- throughput ----------------------------------------------------------------------


def min_cosine(rows: torch.Tensor, reference: torch.Tensor) -> float:
    """Minimum over texts and layers of the cosine similarity of (N, L, d) rows."""
    from extraction import metrics

    return float(metrics.cosine_similarity(rows, reference).min())


def _timing(name, result, body_params, loaded, sgemm) -> StrategyTiming:
    flops = useful_flops(body_params, loaded.hidden_size, loaded.vocab_size, result.real_tokens, len(result.hidden))
    gflops = flops / result.seconds / 1e9
    return StrategyTiming(
        name=name,
        texts=len(result.hidden),
        real_tokens=result.real_tokens,
        computed_positions=result.computed_positions,
        forward_passes=result.forward_passes,
        seconds=result.seconds,
        tokens_per_second=result.tokens_per_second,
        pad_fraction=result.pad_fraction,
        useful_gflops=gflops,
        sgemm_fraction=gflops / sgemm,
        capture=result.capture,
        load_average=os.getloadavg()[0],
    )


def _subset(tokenized: TokenizedTexts, rows: Sequence[int]) -> TokenizedTexts:
    from extraction.texts import TokenizedTexts

    return TokenizedTexts(
        [tokenized.texts[i] for i in rows], [tokenized.token_ids[i] for i in rows], [], tokenized.max_tokens
    )


def _fastest(repeats: int, run: Callable[[], ExtractionResult]) -> ExtractionResult:
    """The run with the fewest seconds out of ``repeats``; all must agree bit for bit."""
    best = run()
    for _ in range(repeats - 1):
        again = run()
        if not torch.equal(again.hidden, best.hidden):
            raise RuntimeError(f"{best.strategy}: two runs of the same extraction gave different states")
        best = min(best, again, key=lambda result: result.seconds)
    return best


def time_strategies(
    loaded: LoadedModel,
    tokenized: TokenizedTexts,
    strategies: Sequence[str],
    sgemm: float,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
    single_texts: int = DEFAULT_SINGLE_TEXTS,
    check_texts: int = CHECK_TEXTS,
    say: Callable[[str], None] = logger.info,
    repeats: int = 1,
    exact_cosine: float = BENCH_EXACT_COSINE,
) -> tuple[list[StrategyTiming], dict[str, str]]:
    """Time ``single`` on a spread subset of ``single_texts`` texts, then every other strategy
    in ``strategies`` that is exact on a ``check_texts`` sample of that subset, on all texts.

    Each timing is the fastest of ``repeats`` runs (other work on a shared machine only
    ever slows a run down). Every timed run keeps all layers (``keep_logits=False``); its rows on the ``single``
    subset are compared with ``single``'s. Returns the timings (``single`` first) and, for
    the strategies not timed, why.
    """
    from extraction.extract import extract_states

    body = body_parameters(loaded.model)
    single_rows = spread_subset(tokenized.lengths, single_texts)
    single_set = _subset(tokenized, single_rows)
    check_rows = spread_subset(single_set.lengths, check_texts)
    check_set = _subset(single_set, check_rows)
    # Warm-up: the first forward passes of a process pay one-off costs (allocator, kernels),
    # and the first extraction verifies the capture hooks for this model.
    extract_states(loaded, _subset(tokenized, [0]), "single", keep_logits=False)

    say(f"timing single on {len(single_set)} texts ({sum(single_set.lengths)} tokens)")
    reference = _fastest(repeats, lambda: extract_states(loaded, single_set, "single", keep_logits=False))
    single = _timing("single", reference, body, loaded, sgemm)
    single.ratio_to_single, single.min_cosine_vs_single, single.exact = 1.0, 1.0, True
    timings, not_timed = [single], {}
    for name in strategies:
        if name == "single":
            continue
        check = extract_states(loaded, check_set, name, batch_size, max_batch_tokens, keep_logits=False)
        check_cosine = min_cosine(check.hidden, reference.hidden[check_rows])  # (check, L, d) vs the same rows
        if not check_cosine >= exact_cosine:
            not_timed[name] = f"not exact on the {len(check_set)}-text check sample (min cosine {check_cosine:.6f})"
            say(f"{name}: {not_timed[name]}; not timed")
            continue
        say(f"timing {name} on {len(tokenized)} texts ({sum(tokenized.lengths)} tokens)")
        result = _fastest(
            repeats,
            lambda name=name: extract_states(loaded, tokenized, name, batch_size, max_batch_tokens, keep_logits=False),
        )
        timing = _timing(name, result, body, loaded, sgemm)
        timing.ratio_to_single = timing.tokens_per_second / single.tokens_per_second
        timing.min_cosine_vs_single = min_cosine(result.hidden[single_rows], reference.hidden)
        timing.exact = timing.min_cosine_vs_single >= exact_cosine
        timings.append(timing)
    return timings, not_timed


# --- child processes: cold start and peak memory ------------------------------------

_LOAD_CHILD = """
import json, sys, time
start = time.perf_counter()
from extraction.models import load_model
imported = time.perf_counter()
loaded = load_model(sys.argv[1], dtype=sys.argv[2])
done = time.perf_counter()
print(json.dumps({"import_seconds": imported - start, "load_seconds": done - imported,
                  "ready_seconds": done - start, "from_cache": loaded.from_cache}))
"""

# Memory marks shared by the two extraction children: the resident set right after the
# model is loaded, then the peak from there on. Loading alone can peak well above the
# model (safetensors pages mapped while the weights are copied), so the high-water mark
# is reset through /proc/self/clear_refs ("5", Linux >= 4.0) once load_model returns.
_MEMORY_MARKS = """
import gc, json, sys
def _status(key):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
def _mark_loaded(marks):
    gc.collect()
    marks["rss_after_load_bytes"] = _status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        marks["peak_reset"] = True
    except OSError:
        marks["peak_reset"] = False
def _finish(marks):
    if marks.get("peak_reset"):
        marks["peak_after_load_bytes"] = _status("VmHWM")
    print(json.dumps(marks))
marks = {}
"""

# The extract command itself, with its model loader wrapped to set the marks.
_EXTRACT_COMMAND_CHILD = (
    _MEMORY_MARKS
    + """
import extraction.commands.extract as command
from extraction.cli import main
_load = command.load_model_from_args
def _load_and_mark(args):
    loaded = _load(args)
    _mark_loaded(marks)
    return loaded
command.load_model_from_args = _load_and_mark
code = main(sys.argv[1:])
_finish(marks)
sys.exit(code)
"""
)

# Where there is no extract command: extract_states, every layer, no logits.
_EXTRACT_STATES_CHILD = (
    _MEMORY_MARKS
    + """
from extraction.extract import extract_states
from extraction.models import load_model
from extraction.texts import read_texts, tokenize_texts
model, dtype, path, strategy, batch_size = sys.argv[1:6]
loaded = load_model(model, dtype=dtype)
_mark_loaded(marks)
tokenized = tokenize_texts(loaded.tokenizer, read_texts(path), max_tokens=loaded.context_length)
result = extract_states(loaded, tokenized, strategy, int(batch_size), keep_logits=False)
_finish(marks)
"""
)


@dataclass
class ChildRun:
    """A child process: exit status, wall time from spawn to exit, peak resident memory."""

    returncode: int
    wall_seconds: float
    peak_rss_bytes: int
    stdout: str
    stderr: str

    def last_json(self) -> dict:
        """The last line of stdout that parses as a JSON object ({} if none)."""
        for line in reversed(self.stdout.splitlines()):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
        return {}


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this one, offline, with the repository importable."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def run_child(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 1800) -> ChildRun:
    """Run ``python args...`` in the repository; its own peak RSS comes from ``wait4``
    (``ru_maxrss``, KiB on Linux), so other processes never count."""
    import threading

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=env or child_env(), cwd=REPO_ROOT)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            proc.returncode,
            wall,
            usage.ru_maxrss * 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def _child_failure(run: ChildRun, what: str) -> str:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    return f"{what} failed (exit {run.returncode}): {lines[-1] if lines else 'no message'}"


def cold_start(model: str, dtype: str = "float32", cache: bool = True, repeats: int = 2) -> dict:
    """Seconds to ``import extraction.models`` and ``load_model`` in a fresh process.

    ``cache=True``: the user's converted cache (run once beforehand so that it exists);
    the best of ``repeats`` runs is reported with all of them. ``cache=False``: an empty
    temporary ``XDG_CACHE_HOME``, so the embedded GGUF is converted from scratch (once).
    """
    runs = []
    if cache:
        run_child(["-c", _LOAD_CHILD, model, dtype])  # makes sure the cache exists
        for _ in range(repeats):
            runs.append(run_child(["-c", _LOAD_CHILD, model, dtype]))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as empty:
            runs.append(run_child(["-c", _LOAD_CHILD, model, dtype], env=child_env(XDG_CACHE_HOME=empty)))
    failed = [run for run in runs if run.returncode != 0]
    if failed:
        return {"error": _child_failure(failed[0], "loading the model")}
    records = [{**run.last_json(), "process_seconds": run.wall_seconds} for run in runs]
    best = min(records, key=lambda r: r.get("ready_seconds", float("inf")))
    return {**best, "runs": records}


def extract_command_available() -> bool:
    """Whether this tree has the ``extract`` command (``python -m extraction extract``)."""
    return (REPO_ROOT / "extraction" / "commands" / "extract.py").is_file()


def measure_extract_memory(
    model: str,
    texts: Sequence[str],
    strategy: str,
    batch_size: int,
    dtype: str = "float32",
    workdir: Path | None = None,
) -> dict:
    """Memory of one child extracting ``texts``: the ``extract`` command with ``strategy``
    and no verification where it exists, else :func:`~extraction.extract.extract_states`
    (every layer, no logits).

    Returns ``peak_rss_bytes`` (the whole process, loading included, from ``wait4``) and,
    on Linux, ``rss_after_load_bytes`` and ``peak_after_load_bytes`` (the extraction's own
    peak, see ``_MEMORY_MARKS``)."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-", dir=workdir) as folder:
        path = Path(folder) / "texts.txt"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        if extract_command_available():
            how = "extract command"
            args = [
                "-c", _EXTRACT_COMMAND_CHILD, "extract", "--model", model, "--dtype", dtype, "--texts", str(path),
                "--out", str(Path(folder) / "out.safetensors"), "--strategy", strategy,
                "--batch-size", str(batch_size), "--verify", "0",
            ]  # fmt: skip
        else:
            how = "extract_states"
            args = ["-c", _EXTRACT_STATES_CHILD, model, dtype, str(path), strategy, str(batch_size)]
        run = run_child(args)
    if run.returncode != 0:
        return {"texts": len(texts), "how": how, "error": _child_failure(run, how)}
    marks = run.last_json()
    return {
        "texts": len(texts),
        "how": how,
        "peak_rss_bytes": run.peak_rss_bytes,
        "rss_after_load_bytes": marks.get("rss_after_load_bytes"),
        "peak_after_load_bytes": marks.get("peak_after_load_bytes"),
        "wall_seconds": run.wall_seconds,
    }


def memory_report(
    model: str,
    tokenizer,
    num_layers: int,
    hidden_size: int,
    strategy: str,
    batch_size: int,
    counts: Sequence[int] = MEMORY_TEXT_COUNTS,
    baseline_texts: int = MEMORY_BASELINE_TEXTS,
    dtype: str = "float32",
    seed: int = 0,
    max_tokens: int = MEMORY_MAX_TOKENS,
    baseline_repeats: int = 3,
) -> dict:
    """Peak memory of extraction on ``counts`` texts against ``model + one batch + rows``.

    ``peak`` is the extraction's peak (after the model is loaded; the whole process where
    that cannot be measured). ``model + one batch`` is measured: the largest peak, less
    its rows, of ``baseline_repeats`` runs on ``baseline_texts`` texts (one full batch);
    the glibc allocator makes it vary from run to run by a few hundred MiB. Rows are
    ``(L+1) d`` float32 values a text. ``estimate(N) = model_and_batch + rows(N)`` and
    ``peak_over_estimate = peak(N) / estimate(N)``.
    """
    texts = benchmark_texts(tokenizer, max((*counts, baseline_texts)), DEFAULT_MIN_TOKENS, max_tokens, seed=seed + 1)
    row_bytes = (num_layers + 1) * hidden_size * 4

    def peak(run: dict) -> int:
        return run["peak_after_load_bytes"] or run["peak_rss_bytes"]

    baselines = [
        measure_extract_memory(model, texts[:baseline_texts], strategy, batch_size, dtype)
        for _ in range(baseline_repeats)
    ]
    report = {
        "strategy": strategy,
        "batch_size": batch_size,
        "text_tokens": [DEFAULT_MIN_TOKENS, max_tokens],
        "row_bytes": row_bytes,
        "baseline": baselines,
    }
    failed = [run for run in baselines if "error" in run]
    if failed:
        report["error"] = failed[0]["error"]
        return report
    model_and_batch = max(peak(run) for run in baselines) - row_bytes * baseline_texts
    report["model_and_batch_bytes"] = model_and_batch
    report["model_and_batch_range_bytes"] = [
        min(peak(run) for run in baselines) - row_bytes * baseline_texts,
        model_and_batch,
    ]
    report["rss_after_load_bytes"] = baselines[0]["rss_after_load_bytes"]
    runs = []
    for count in counts:
        run = measure_extract_memory(model, texts[:count], strategy, batch_size, dtype)
        if "error" not in run:
            run["peak_bytes"] = peak(run)
            run["rows_bytes"] = row_bytes * count
            run["estimate_bytes"] = model_and_batch + row_bytes * count
            run["peak_over_estimate"] = run["peak_bytes"] / run["estimate_bytes"]
        runs.append(run)
    report["runs"] = runs
    return report


# --- the app's comparison -----------------------------------------------------------


def app_comparison(loaded: LoadedModel, batch_size: int = 4) -> dict:
    """Seconds of ``compare_strategies`` over every strategy on the sample texts (the
    app's default run), split into extraction and everything else (metrics, logit lens)."""
    from extraction.compare import compare_strategies
    from extraction.samples import SAMPLE_TEXTS

    start = time.perf_counter()
    report = compare_strategies(loaded, SAMPLE_TEXTS, batch_size=batch_size)
    total = time.perf_counter() - start
    extraction = sum(comp.extraction.seconds for comp in report.strategies.values())
    return {
        "texts": len(SAMPLE_TEXTS),
        "tokens": sum(report.tokenized.lengths),
        "batch_size": batch_size,
        "seconds": total,
        "extraction_seconds": extraction,
        "metrics_seconds": total - extraction,
        "verdicts": {name: comp.verdict for name, comp in report.strategies.items()},
    }


# --- one run -------------------------------------------------------------------------


def environment() -> dict:
    """What the figures depend on: CPU, threads, versions, load."""
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_start": list(os.getloadavg()),
    }


@dataclass
class BenchmarkSettings:
    """What one run measures (``python -m bench --help`` documents each)."""

    model: str = "smollm2-135m"
    dtype: str = "float32"
    texts: int = DEFAULT_TEXTS
    min_tokens: int = DEFAULT_MIN_TOKENS
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0
    strategies: str = "all"
    single_texts: int = DEFAULT_SINGLE_TEXTS
    check_texts: int = CHECK_TEXTS
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    sgemm_size: int = 2048
    repeats: int = 1
    exact_cosine: float = BENCH_EXACT_COSINE  # float32; 16-bit dtypes drift by rounding and need a lower bar
    throughput: bool = True
    cold_start: bool = True
    cold_start_without_cache: bool = True
    memory: bool = True
    memory_counts: tuple[int, ...] = MEMORY_TEXT_COUNTS
    memory_baseline_texts: int = MEMORY_BASELINE_TEXTS
    memory_max_tokens: int = MEMORY_MAX_TOKENS
    memory_strategy: str = "sorted"  # used when no strategy was timed; otherwise the fastest exact one
    app_comparison: bool = True
    app_batch_size: int = 4


#: The issue's targets (float32, 2 cores).
TARGETS = {
    "best_ratio_to_single": 10.0,
    "best_sgemm_fraction": 0.6,
    "ready_seconds_with_cache": 2.0,
    "app_comparison_seconds": 20.0,
    "memory_peak_over_estimate": 1.0,
}


def check_targets(report: BenchmarkReport) -> dict:
    """Each target with the figure reached and whether it is met (None where not measured)."""
    best = report.best()
    memory_runs = [r for r in report.memory.get("runs", []) if "peak_over_estimate" in r]
    figures = {
        "best_ratio_to_single": best.ratio_to_single if best else None,
        "best_sgemm_fraction": best.sgemm_fraction if best else None,
        "ready_seconds_with_cache": report.cold_start.get("with_cache", {}).get("load_seconds"),
        "app_comparison_seconds": report.app_comparison.get("seconds"),
        "memory_peak_over_estimate": max(r["peak_over_estimate"] for r in memory_runs) if memory_runs else None,
    }
    at_most = {"ready_seconds_with_cache", "app_comparison_seconds", "memory_peak_over_estimate"}
    out = {}
    for key, target in TARGETS.items():
        value = figures[key]
        met = None if value is None else (value <= target if key in at_most else value >= target)
        out[key] = {"target": target, "reached": value, "met": met}
    return out


def run_benchmark(settings: BenchmarkSettings, say: Callable[[str], None] = logger.info) -> BenchmarkReport:
    """Everything in :class:`BenchmarkSettings`, in one process plus child processes."""
    from extraction.models import load_model
    from extraction.strategies import parse_strategy_names
    from extraction.texts import tokenize_texts

    names = parse_strategy_names(settings.strategies)
    env = environment()
    cold: dict = {}
    if settings.cold_start:
        say("cold start with the cache present (child processes)")
        cold["with_cache"] = cold_start(settings.model, settings.dtype, cache=True)
        if settings.cold_start_without_cache:
            say("cold start with no cache (child process, converts the GGUF)")
            cold["without_cache"] = cold_start(settings.model, settings.dtype, cache=False)

    loaded = load_model(settings.model, dtype=settings.dtype)
    texts = benchmark_texts(loaded.tokenizer, settings.texts, settings.min_tokens, settings.max_tokens, settings.seed)
    tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
    lengths = tokenized.lengths
    say("sgemm")
    sgemm = sgemm_gflops(settings.sgemm_size, device=loaded.device)
    report = BenchmarkReport(
        environment=env,
        settings={**asdict(settings), "memory_counts": list(settings.memory_counts)},
        texts={
            "count": len(lengths),
            "seed": settings.seed,
            "min_tokens": min(lengths),
            "mean_tokens": sum(lengths) / len(lengths),
            "max_tokens": max(lengths),
            "total_tokens": sum(lengths),
        },
        sgemm_gflops=sgemm,
        body_parameters=body_parameters(loaded.model),
        cold_start=cold,
    )
    if settings.throughput:
        report.timings, report.not_timed = time_strategies(
            loaded,
            tokenized,
            names,
            sgemm,
            settings.batch_size,
            settings.max_batch_tokens,
            settings.single_texts,
            settings.check_texts,
            say,
            settings.repeats,
            settings.exact_cosine,
        )
    report.environment["sgemm_gflops_end"] = sgemm_gflops(settings.sgemm_size, device=loaded.device)
    if settings.app_comparison:
        say("the app's full comparison on the sample texts")
        report.app_comparison = app_comparison(loaded, settings.app_batch_size)
    if settings.memory:
        best = report.best()
        strategy = best.name if best else settings.memory_strategy
        say(f"peak memory of extraction with {strategy} (child processes)")
        report.memory = memory_report(
            settings.model,
            loaded.tokenizer,
            loaded.num_hidden_layers,
            loaded.hidden_size,
            strategy,
            settings.batch_size,
            settings.memory_counts,
            settings.memory_baseline_texts,
            settings.dtype,
            settings.seed,
            settings.memory_max_tokens,
        )
    report.environment["load_average_end"] = list(os.getloadavg())
    report.targets = check_targets(report)
    return report


# --- output --------------------------------------------------------------------------


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def format_report(report: BenchmarkReport) -> str:
    """The figures as plain-text tables."""
    env, texts = report.environment, report.texts
    lines = [
        f"{report.settings['model']} {report.settings['dtype']}, {env['cpu']} ({env['cpu_count']} CPUs, "
        f"{env['torch_threads']} torch threads), torch {env['torch']}, transformers {env['transformers']}",
        f"load average at start {env['load_average_start'][0]:.2f}, at end "
        f"{env.get('load_average_end', [float('nan')])[0]:.2f}",
        f"texts: {texts['count']} (seed {texts['seed']}), {texts['min_tokens']}-{texts['max_tokens']} tokens, "
        f"mean {texts['mean_tokens']:.1f}, {texts['total_tokens']} tokens in all",
        f"sgemm: {report.sgemm_gflops:.1f} GFLOP/s at the start, {env.get('sgemm_gflops_end', float('nan')):.1f} at "
        f"the end; body parameters {report.body_parameters / 1e6:.1f} M",
        f"batch size {report.settings['batch_size']}, at most {report.settings['max_batch_tokens']} positions a pass; "
        f"each time the best of {report.settings['repeats']} run(s)",
    ]
    if report.timings:
        lines.append("")
        lines.append(
            f"{'strategy':<12} {'texts':>5} {'tokens/s':>9} {'x single':>8} {'padded':>7} {'GFLOP/s':>8} "
            f"{'of sgemm':>8} {'passes':>6} {'min cos vs single':>18} {'load':>5}"
        )
    for t in report.timings:
        lines.append(
            f"{t.name:<12} {t.texts:>5} {t.tokens_per_second:>9.1f} {t.ratio_to_single:>7.1f}x "
            f"{100 * t.pad_fraction:>6.1f}% {t.useful_gflops:>8.1f} {100 * t.sgemm_fraction:>7.1f}% "
            f"{t.forward_passes:>6} {t.min_cosine_vs_single:>18.7f} {t.load_average:>5.1f}"
            f"{'' if t.exact else '  NOT EXACT'}"
        )
    for name, why in report.not_timed.items():
        lines.append(f"{name:<12} not timed: {why}")
    cold = report.cold_start
    if cold:
        lines.append("")
        for key, label in (("with_cache", "cache present"), ("without_cache", "no cache")):
            record = cold.get(key)
            if record is None:
                continue
            if "error" in record:
                lines.append(f"cold start, {label}: {record['error']}")
            else:
                lines.append(
                    f"cold start, {label}: load_model {record['load_seconds']:.2f} s, import "
                    f"{record['import_seconds']:.2f} s, process {record['process_seconds']:.2f} s"
                )
    if report.app_comparison:
        app = report.app_comparison
        lines.append(
            f"app comparison ({app['texts']} sample texts, all strategies, batch size {app['batch_size']}): "
            f"{app['seconds']:.1f} s (extraction {app['extraction_seconds']:.1f} s, metrics "
            f"{app['metrics_seconds']:.1f} s)"
        )
    memory = report.memory
    if memory:
        if "error" in memory:
            lines.append(f"memory: {memory['error']}")
        else:
            low, high = memory["model_and_batch_range_bytes"]
            lines.append(
                f"memory ({memory['baseline'][0]['how']}, {memory['strategy']}, batch size {memory['batch_size']}, "
                f"texts of {memory['text_tokens'][0]}-{memory['text_tokens'][1]} tokens): "
                f"{_mib(memory['rss_after_load_bytes'])} once the model is loaded (weights mapped, not yet read); "
                f"model + one batch {_mib(low)} to {_mib(high)} over {len(memory['baseline'])} runs of "
                f"{memory['baseline'][0]['texts']} texts"
            )
            for run in memory.get("runs", []):
                if "error" in run:
                    lines.append(f"  {run['texts']} texts: {run['error']}")
                else:
                    lines.append(
                        f"  {run['texts']} texts: peak {_mib(run['peak_bytes'])}, model + batch + rows "
                        f"({_mib(run['rows_bytes'])}) {_mib(run['estimate_bytes'])}: {run['peak_over_estimate']:.3f} "
                        "of it"
                    )
    if report.targets:
        lines.append("")
        lines.append("targets:")
        for key, record in report.targets.items():
            reached = record["reached"]
            status = "not measured" if record["met"] is None else ("met" if record["met"] else "NOT met")
            value = "-" if reached is None else f"{reached:.3f}"
            lines.append(f"  {key}: {value} (target {record['target']}) {status}")
    return "\n".join(lines)
