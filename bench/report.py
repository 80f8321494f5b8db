"""The benchmark's report: what one run measured (:class:`BenchmarkReport`, whose
``to_dict`` is the JSON written by ``--json``) and the plain-text tables (:func:`format_report`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bench.throughput import StrategyTiming


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
    peers: list[dict] = field(default_factory=list)  # bench.peers.PeerTiming records, this project first
    shortened_pass: dict = field(default_factory=dict)  # bench.layers.shortened_pass
    end_to_end: dict = field(default_factory=dict)  # bench.endtoend.end_to_end
    targets: dict = field(default_factory=dict)

    def best(self) -> StrategyTiming | None:
        """The fastest exact strategy other than ``single``."""
        batched = [t for t in self.timings if t.name != "single" and t.exact]
        return max(batched, key=lambda t: t.tokens_per_second) if batched else None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["best"] = self.best().name if self.best() else None
        return data


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.0f} MiB"


def format_report(report: BenchmarkReport) -> str:
    """The figures as plain-text tables, one section after another (a section with nothing measured is left out)."""
    sections = (
        _header_lines,
        _timing_lines,
        _cold_start_lines,
        _peer_lines,
        _end_to_end_lines,
        _shortened_pass_lines,
        _app_comparison_lines,
        _memory_lines,
        _target_lines,
    )
    return "\n".join(line for section in sections for line in section(report))


def _header_lines(report: BenchmarkReport) -> list[str]:
    """The model, machine, texts, sgemm rate and batch settings."""
    env, texts = report.environment, report.texts
    return [
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


def _timing_lines(report: BenchmarkReport) -> list[str]:
    """One row per timed strategy, then the strategies not timed and why."""
    lines = []
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
    return lines


def _cold_start_lines(report: BenchmarkReport) -> list[str]:
    """The cold starts, with the cache and without it."""
    cold = report.cold_start
    if not cold:
        return []
    lines = [""]
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
    return lines


def _peer_lines(report: BenchmarkReport) -> list[str]:
    """The code people write instead, in ms per text against this project's."""
    if not report.peers:
        return []
    lines = ["", f"peers ({report.peers[0]['texts']} texts, ms per text, every layer):"]
    for p in report.peers:
        what = f"{p['name']} ({p['strategy']})" if p["strategy"] else p["name"]
        lines.append(
            f"  {what:<28} {p['ms_per_text']:>8.1f} ms  x{p['slower_than_ours']:>5.2f} of ours  "
            f"{100 * p['sgemm_fraction']:>5.1f}% of sgemm  min cos {p['min_cosine_vs_single']:.6f}  "
            f"load {p['load_average']:.1f}"
        )
    return lines


def _end_to_end_lines(report: BenchmarkReport) -> list[str]:
    """The ``extract`` command, auto against single, cold and remembered."""
    e2e = report.end_to_end
    if not e2e:
        return []
    lines = [""]
    if "error" in e2e:
        lines.append(f"end to end: {e2e['error']}")
    for r in e2e.get("runs", []):
        choice = "-" if r["choice_seconds_cold"] is None else f"{r['choice_seconds_cold']:.1f} s"
        lines.append(
            f"end to end, {r['texts']} texts: single {r['single_seconds']:.1f} s, "
            f"auto {r['auto_cold_seconds']:.1f} s "
            f"(choice {choice}; x{r['speedup_cold']:.2f}), auto remembered {r['auto_warm_seconds']:.1f} s "
            f"(x{r['speedup_warm']:.2f}), load {r['load_average']:.1f}"
        )
    return lines


def _shortened_pass_lines(report: BenchmarkReport) -> list[str]:
    """``--layers K`` against ``--layers all``: the pass stopped after block K against the whole pass."""
    short = report.shortened_pass
    if not short:
        return []
    if "error" in short:
        return ["", f"shortened pass: {short['error']}"]
    return [
        "",
        f"shortened pass, {short['texts']} texts, {short['strategy']}: "
        f"--layers all {short['seconds_all']:.1f} s, "
        f"--layers {short['layer']} {short['seconds_layer']:.1f} s (x{short['speedup']:.2f}; ideal "
        f"{short['num_layers']}/{short['layer']}), layer {short['layer']}'s rows identical: "
        f"{short['layer_rows_identical']}",
    ]


def _app_comparison_lines(report: BenchmarkReport) -> list[str]:
    """The app's full comparison on the sample texts."""
    app = report.app_comparison
    if not app:
        return []
    return [
        f"app comparison ({app['texts']} sample texts, all strategies, batch size {app['batch_size']}): "
        f"{app['seconds']:.1f} s (extraction {app['extraction_seconds']:.1f} s, metrics "
        f"{app['metrics_seconds']:.1f} s)"
    ]


def _memory_lines(report: BenchmarkReport) -> list[str]:
    """Peak memory of extraction: the model and one batch, then each run against its estimate."""
    memory = report.memory
    if not memory:
        return []
    if "error" in memory:
        return [f"memory: {memory['error']}"]
    low, high = memory["model_and_batch_range_bytes"]
    lines = [
        f"memory ({memory['baseline'][0]['how']}, {memory['strategy']}, batch size {memory['batch_size']}, "
        f"texts of {memory['text_tokens'][0]}-{memory['text_tokens'][1]} tokens): "
        f"{_mib(memory['rss_after_load_bytes'])} once the model is loaded (weights mapped, not yet read); "
        f"model + one batch {_mib(low)} to {_mib(high)} over {len(memory['baseline'])} runs of "
        f"{memory['baseline'][0]['texts']} texts"
    ]
    for run in memory.get("runs", []):
        if "error" in run:
            lines.append(f"  {run['texts']} texts: {run['error']}")
        else:
            lines.append(
                f"  {run['texts']} texts: peak {_mib(run['peak_bytes'])}, model + batch + rows "
                f"({_mib(run['rows_bytes'])}) {_mib(run['estimate_bytes'])}: {run['peak_over_estimate']:.3f} "
                "of it"
            )
    return lines


def _target_lines(report: BenchmarkReport) -> list[str]:
    """Each target, the figure reached and whether it was met."""
    if not report.targets:
        return []
    lines = ["", "targets:"]
    for key, record in report.targets.items():
        reached = record["reached"]
        status = "not measured" if record["met"] is None else ("met" if record["met"] else "NOT met")
        value = "-" if reached is None else f"{reached:.3f}"
        lines.append(f"  {key}: {value} (target {record['target']}) {status}")
    return lines
