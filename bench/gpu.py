"""``python -m bench.gpu``: the throughput and peers figures on a lent GPU, in one run.

The GPU machine has torch, transformers, accelerate, safetensors, pandas, numpy and
tqdm, but no network, no model files and no ``gguf``/``plotly``/``streamlit`` (nothing
here imports them). So the models are built from configs with random weights: the
SmolLM2-135M config and tokenizer come from a small folder, ``gpu-assets/`` (made here by
``python -m bench.gpu --make-assets gpu-assets`` from the converted model in the cache,
about 3.5 MB), and a ~1B Llama (:data:`BIG_LLAMA`: 16 layers, hidden 2048) shares that
tokenizer. Each model is saved with ``save_pretrained`` under ``--workdir`` and loaded
back with :func:`extraction.models.load_model`, like any local folder.

For each model and dtype (float32, bfloat16), on ``--device`` (default cuda):

* the matrix-product rate in that dtype (the sgemm of the CPU figures);
* throughput (:func:`bench.throughput.time_strategies`): ``single`` on an evenly spread
  subset, then every strategy exact on a check sample, on all texts (16-bit runs are
  held to a min cosine of 0.999, float32 ones to 0.99999);
* peers (:func:`bench.peers.time_peers`): the code researchers write instead, and the
  layout ``--strategy auto`` chooses, ms per text.

The JSON goes to ``--out`` (a folder; ``$OUT`` on the lent machine). ``--tiny`` shrinks
everything (a 2-layer model, a dozen texts) so that the whole path can be tried on a CPU:
``python -m bench.gpu --device cpu --tiny --out /tmp/gpu-try``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

ASSET_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
#: A ~1B Llama for the bigger-model figure (Llama-3.2-1B-like widths, SmolLM2's vocabulary).
BIG_LLAMA = {
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
}
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16}  # fmt: skip
DTYPES = ("float32", "bfloat16")
EXACT_COSINE = {"float32": 0.99999, "bfloat16": 0.999}


def make_assets(folder: Path) -> list[str]:
    """Copy SmolLM2's config and tokenizer files from the converted model in the cache."""
    from extraction.models import cache_dir

    sources = sorted(cache_dir().glob("smollm2-135m-model-*"), key=lambda p: p.stat().st_mtime)
    if not sources:
        raise SystemExit("no converted SmolLM2 in the cache: run `python -m extraction compare` once first")
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in ASSET_FILES:
        if (sources[-1] / name).is_file():
            shutil.copy2(sources[-1] / name, folder / name)
            copied.append(name)
    return copied


def build_model(assets: Path, target: Path, overrides: dict, device: str, seed: int = 0) -> Path:
    """A random-weight Llama from ``assets/config.json`` with ``overrides``, saved with the
    tokenizer files to ``target``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(assets)
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    build_device = device if device.startswith("cuda") else "cpu"
    with torch.device(build_device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(assets).save_pretrained(target)
    del model
    return target


def gemm_gflops(dtype_name: str, device: str, size: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` rate of ``torch.mm`` on two ``size x size`` matrices in ``dtype_name``."""
    import torch

    from extraction.models.loaded import TORCH_DTYPES

    dtype = TORCH_DTYPES[dtype_name]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.mm(a, b)
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def run_suite(args: argparse.Namespace) -> dict:
    from dataclasses import asdict

    import torch
    import transformers

    from bench.peers import time_peers
    from bench.texts import benchmark_texts
    from bench.throughput import time_strategies
    from extraction.models import load_model
    from extraction.texts import tokenize_texts

    say = lambda line: print(f"... {line}", file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    workdir = Path(args.workdir)
    models = {"smollm2-135m-config": TINY if args.tiny else {}}
    if not args.tiny and not args.skip_big:
        models["llama-1b-config"] = BIG_LLAMA
    results: dict = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tiny": args.tiny,
        "runs": [],
    }
    for model_name, overrides in models.items():
        if time.perf_counter() - started > args.budget_seconds:
            results["runs"].append({"model": model_name, "skipped": f"over the {args.budget_seconds} s budget"})
            continue
        say(f"building {model_name} (random weights)")
        folder = build_model(Path(args.assets), workdir / model_name, overrides, args.device)
        for dtype in DTYPES:
            if time.perf_counter() - started > args.budget_seconds:
                results["runs"].append({"model": model_name, "dtype": dtype, "skipped": "over the time budget"})
                continue
            say(f"{model_name} {dtype}: loading")
            loaded = load_model(str(folder), dtype=dtype, device=args.device)
            texts = benchmark_texts(loaded.tokenizer, args.texts, 5, args.max_tokens, seed=0)
            tokenized = tokenize_texts(loaded.tokenizer, texts, max_tokens=loaded.context_length)
            gemm = gemm_gflops(dtype, args.device, 256 if args.tiny else 8192)
            record = {"model": model_name, "dtype": dtype, "gemm_gflops": gemm, "texts": len(texts),
                      "tokens": sum(tokenized.lengths)}  # fmt: skip
            try:
                say(f"{model_name} {dtype}: throughput")
                timings, not_timed = time_strategies(
                    loaded, tokenized, ["single", "right", "left", "bucketed", "sorted", "packed"], gemm,
                    batch_size=args.batch_size, max_batch_tokens=args.max_batch_tokens,
                    single_texts=args.single_texts, check_texts=min(16, args.single_texts), say=say,
                    exact_cosine=EXACT_COSINE[dtype],
                )  # fmt: skip
                record["throughput"] = [asdict(t) for t in timings]
                record["not_timed"] = not_timed
                say(f"{model_name} {dtype}: peers")
                record["peers"] = [asdict(p) for p in time_peers(loaded, texts[: args.peer_texts], gemm, say=say)]
            except Exception as error:  # one failing configuration must not lose the others' figures
                record["error"] = f"{type(error).__name__}: {error}"
                say(f"{model_name} {dtype}: failed: {record['error']}")
            results["runs"].append(record)
            del loaded
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        shutil.rmtree(folder, ignore_errors=True)
    results["seconds"] = time.perf_counter() - started
    return results


def summary(results: dict) -> str:
    lines = [f"{results['gpu'] or results['device']}, torch {results['torch']}, transformers {results['transformers']}"]
    for run in results["runs"]:
        if "skipped" in run:
            lines.append(f"{run['model']} {run.get('dtype', '')}: skipped, {run['skipped']}")
            continue
        lines.append(f"{run['model']} {run['dtype']}: gemm {run['gemm_gflops']:.0f} GFLOP/s, {run['tokens']} tokens")
        if "error" in run:
            lines.append(f"  error: {run['error']}")
            continue
        for t in run["throughput"]:
            lines.append(
                f"  {t['name']:<10} {t['tokens_per_second']:>10.0f} tokens/s  x{t['ratio_to_single']:.2f} single  "
                f"{100 * t['sgemm_fraction']:>5.1f}% of gemm  min cos {t['min_cosine_vs_single']:.6f}"
            )
        for p in run["peers"]:
            lines.append(
                f"  peer {p['name']:<20} {p['ms_per_text']:>8.2f} ms/text  x{p['slower_than_ours']:.2f} of ours "
                f"{p['strategy']}"
            )
    lines.append(f"total {results['seconds']:.0f} s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "gpu-results"), help="folder for gpu-bench.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--assets", default="gpu-assets", help="SmolLM2 config and tokenizer files")
    parser.add_argument("--workdir", default="/tmp/padding-audit-gpu", help="where the built models are saved")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--single-texts", type=int, default=48)
    parser.add_argument("--peer-texts", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-batch-tokens", type=int, default=8192)
    parser.add_argument("--skip-big", action="store_true", help="leave out the ~1B model")
    parser.add_argument(
        "--budget-seconds", type=float, default=360, help="start no new model or dtype after this long (default 360)"
    )
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model and a dozen texts: try the path on CPU")
    parser.add_argument("--make-assets", metavar="FOLDER", help="copy SmolLM2's config and tokenizer here and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.make_assets:
        print("copied:", ", ".join(make_assets(Path(args.make_assets))))
        return 0
    if args.tiny:
        args.texts, args.single_texts, args.peer_texts, args.max_tokens = 12, 6, 8, 40
        args.batch_size = min(args.batch_size, 4)
    if not (Path(args.assets) / "config.json").is_file():
        print(f"error: {args.assets}/config.json missing: run python -m bench.gpu --make-assets {args.assets}",
              file=sys.stderr)  # fmt: skip
        return 2
    results = run_suite(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu-bench.json").write_text(json.dumps(results, indent=1))
    print(summary(results))
    print(f"wrote {out / 'gpu-bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
