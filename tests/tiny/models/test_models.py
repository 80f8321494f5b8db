"""Model loading: options, presets, error messages, and the embedded model's cache folder.

These tests use the tiny random presets (their tokenizer is read from the embedded GGUF
once, then cached under the user's cache folder); the embedded model's conversion into a
temporary cache is tested in ``integration/test_models_embedded.py``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GraniteSWAConfig, ViTConfig

from extraction.models import (
    ATTN_IMPLEMENTATIONS,
    DEFAULT_MODEL,
    DTYPES,
    MODEL_PRESETS,
    LoadedModel,
    ModelLoadError,
    cache_dir,
    embedded_gguf_path,
    gguf_cache_key,
    load_model,
    resolve_device,
)
from extraction.models.embedded import STAMP_FILE, cache_quietly, write_cache_folder
from extraction.models.loaded import ensure_pad_token

TINY_MODELS = ["tiny-random-llama", "tiny-random-gpt2"]
TEXTS = [
    "The capital of France is",
    "Hello world, how are you doing today my friend?",
    "A short one.",
    "Padding corrupts hidden states when extraction reads the wrong position in a batch.",
]
SENSITIVE_BELOW = 0.99  # a random model must move these states at least this much


@pytest.fixture(scope="module", params=TINY_MODELS)
def tiny(request: pytest.FixtureRequest) -> LoadedModel:
    return load_model(request.param, device="cpu")


def hidden_states(
    loaded: LoadedModel,
    input_ids: list[list[int]],
    attention_mask: list[list[int]] | None = None,
    position_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """All hidden states, each (B, T, hidden)."""
    with torch.no_grad():
        output = loaded.model(
            input_ids=torch.tensor(input_ids, device=loaded.device),
            attention_mask=None if attention_mask is None else torch.tensor(attention_mask, device=loaded.device),
            position_ids=position_ids,
            output_hidden_states=True,
        )
    return output.hidden_states


def token_ids(loaded: LoadedModel) -> list[list[int]]:
    return [loaded.tokenizer(text).input_ids for text in TEXTS]


def single_last_states(loaded: LoadedModel) -> list[torch.Tensor]:
    """Per text, the last token's state at every layer alone in its batch: (layers + 1, hidden)."""
    return [torch.stack([h[0, -1] for h in hidden_states(loaded, [ids])]) for ids in token_ids(loaded)]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.float(), b.float(), dim=-1)


# --- options -------------------------------------------------------------------------


def test_invalid_dtype_names_the_choices():
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        load_model("tiny-random-llama", dtype="float64")


def test_invalid_attn_implementation_names_the_choices():
    with pytest.raises(ValueError, match="sdpa, eager"):
        load_model("tiny-random-llama", attn_implementation="flash_attention_2")


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", ""])
def test_invalid_device_names_the_choices(device: str):
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N, mps"):
        resolve_device(device)
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N, mps"):
        load_model("tiny-random-llama", device=device)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
        if not torch.backends.mps.is_available():
            assert resolve_device("auto") == torch.device("cpu")


def test_public_constants():
    assert DTYPES == ("float32", "bfloat16", "float16")
    assert ATTN_IMPLEMENTATIONS == ("sdpa", "eager")
    assert DEFAULT_MODEL == "smollm2-135m"
    assert set(MODEL_PRESETS) == {"smollm2-135m", "tiny-random-llama", "tiny-random-gpt2"}
    assert issubclass(ModelLoadError, ValueError)


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "padding-audit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "padding-audit"


def test_embedded_gguf_is_found_without_importing_the_package():
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"


# --- tiny random models --------------------------------------------------------------


def test_tiny_model_is_ready_for_extraction(tiny: LoadedModel):
    assert tiny.is_random and "RANDOM WEIGHTS" in tiny.description
    assert tiny.source == "random config" and not tiny.from_cache
    assert not tiny.model.training
    assert not any(parameter.requires_grad for parameter in tiny.model.parameters())
    assert tiny.dtype == torch.float32 and tiny.device == torch.device("cpu")
    assert {parameter.dtype for parameter in tiny.model.parameters()} == {torch.float32}
    assert tiny.attn_implementation == "sdpa"
    assert tiny.num_hidden_layers == 4 and tiny.hidden_size == 64
    assert tiny.vocab_size == len(tiny.tokenizer)
    assert tiny.context_length == 512
    assert tiny.pad_token_id == tiny.tokenizer.pad_token_id == tiny.tokenizer.eos_token_id
    assert tiny.pad_token_note is not None and "eos" in tiny.pad_token_note
    assert tiny.lm_head is tiny.model.get_output_embeddings()


def test_tiny_positions_and_final_norm(tiny: LoadedModel):
    if tiny.name == "tiny-random-gpt2":
        assert tiny.uses_absolute_positions
        assert tiny.final_norm is tiny.model.transformer.ln_f
    else:
        assert not tiny.uses_absolute_positions
        assert tiny.final_norm is tiny.model.model.norm


def test_hidden_states_count_and_last_state_is_post_norm(tiny: LoadedModel):
    ids = token_ids(tiny)[1]
    with torch.no_grad():
        output = tiny.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        assert len(output.hidden_states) == tiny.num_hidden_layers + 1
        torch.testing.assert_close(tiny.lm_head(output.hidden_states[-1]), output.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_models_are_seeded_and_leave_the_global_rng_alone(name: str):
    rng_before = torch.get_rng_state()
    first, second = load_model(name, device="cpu"), load_model(name, device="cpu")
    assert torch.equal(torch.get_rng_state(), rng_before)
    first_weights, second_weights = first.model.state_dict(), second.model.state_dict()
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[key], second_weights[key]) for key in first_weights)


def test_tiny_bfloat16_eager_is_the_float32_model_cast(tiny: LoadedModel):
    low = load_model(tiny.name, dtype="bfloat16", device="cpu", attn_implementation="eager")
    assert low.dtype == torch.bfloat16 and low.attn_implementation == "eager"
    assert "bfloat16" in low.description and "eager" in low.description
    reference = tiny.model.state_dict()
    for key, weight in low.model.state_dict().items():
        assert weight.dtype == torch.bfloat16
        assert torch.equal(weight, reference[key].to(torch.bfloat16))


def test_tiny_gpt2_left_padding_without_position_ids_is_visibly_wrong():
    """Absolute positions: left padding shifts every real token unless position ids are
    derived from the mask. The random model must show it, and agree once fixed."""
    loaded = load_model("tiny-random-gpt2", device="cpu")
    ids = token_ids(loaded)
    width = max(map(len, ids))
    padded = [[loaded.pad_token_id] * (width - len(row)) + row for row in ids]
    mask = [[0] * (width - len(row)) + [1] * len(row) for row in ids]
    single = torch.stack(single_last_states(loaded))  # (texts, layers + 1, hidden)
    shifted = torch.stack(hidden_states(loaded, padded, mask))[:, :, -1].transpose(0, 1)  # (texts, layers + 1, hidden)
    position_ids = (torch.tensor(mask).cumsum(-1) - 1).clamp(min=0)  # (texts, width)
    fixed = torch.stack(hidden_states(loaded, padded, mask, position_ids))[:, :, -1].transpose(0, 1)

    padded_texts = [i for i, row in enumerate(ids) if len(row) < width]
    later_layers = range(loaded.num_hidden_layers // 2, loaded.num_hidden_layers + 1)
    shifted_cosine = cosine(shifted, single)[padded_texts][:, later_layers]  # (padded texts, later layers)
    assert shifted_cosine.min(dim=0).values.max() < SENSITIVE_BELOW, shifted_cosine
    assert cosine(fixed, single).min() > 0.9999


@pytest.mark.parametrize("reset_positions", [False, True], ids=["concatenated", "packed"])
def test_tiny_models_leak_between_texts_without_a_mask(tiny: LoadedModel, reset_positions: bool):
    """Two texts in one row with no block mask: the second attends to the first, which
    must move its last-token state at every layer after the embeddings."""
    ids = token_ids(tiny)
    single = single_last_states(tiny)
    first = ids[0]
    for index in range(1, len(ids)):
        second = ids[index]
        position_ids = None
        if reset_positions:
            position_ids = torch.tensor([list(range(len(first))) + list(range(len(second)))])  # (1, T)
        joined = torch.stack([h[0, -1] for h in hidden_states(tiny, [first + second], None, position_ids)])
        layer_cosine = cosine(joined, single[index])  # (layers + 1,)
        assert (layer_cosine[1:] < SENSITIVE_BELOW).all(), (index, layer_cosine)


# --- other sources and their errors ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_gpt2_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LoadedModel]:
    loaded = load_model("tiny-random-gpt2", device="cpu")
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder, loaded


def test_folder_loads_with_identical_logits(tiny_gpt2_folder: tuple[Path, LoadedModel]):
    folder, original = tiny_gpt2_folder
    reloaded = load_model(str(folder), device="cpu")
    assert reloaded.source == str(folder.resolve())
    assert not reloaded.is_random and not reloaded.from_cache
    assert reloaded.uses_absolute_positions
    ids = torch.tensor([token_ids(original)[0]])
    with torch.no_grad():
        assert torch.equal(reloaded.model(ids).logits, original.model(ids).logits)


def test_missing_pad_token_falls_back_to_eos(tiny_gpt2_folder: tuple[Path, LoadedModel], tmp_path: Path):
    folder, original = tiny_gpt2_folder
    tokenizer = copy.deepcopy(original.tokenizer)
    tokenizer.pad_token = None
    original.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), device="cpu")
    assert loaded.pad_token_note == "no pad token: using eos '<|im_end|>' (id 2) as pad"
    assert loaded.tokenizer.pad_token == loaded.tokenizer.eos_token
    assert loaded.pad_token_id == 2


def test_no_pad_and_no_eos_is_an_error(tiny: LoadedModel):
    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.pad_token = None
    tokenizer.eos_token = None
    with pytest.raises(ModelLoadError, match="neither a pad token nor an eos token"):
        ensure_pad_token(tokenizer, "x")


def test_missing_hub_model_offline(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as error:
        load_model("padding-audit-tests/no-such-model", device="cpu")
    assert str(error.value) == (
        "could not load 'padding-audit-tests/no-such-model': not found locally and the hub is offline "
        "(HF_HUB_OFFLINE=1)"
    )


def test_missing_path_is_not_looked_up_on_the_hub(tmp_path: Path):
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        load_model(str(tmp_path / "no" / "such" / "model"), device="cpu")


def test_folder_without_weights(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"has no model weights \(looked for \*\.safetensors, \*\.bin\)"):
        load_model(str(tmp_path), device="cpu")


def test_folder_with_only_a_gguf_points_at_the_file(tmp_path: Path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match="pass the .gguf file itself"):
        load_model(str(tmp_path), device="cpu")


def test_file_named_gguf_that_is_not_gguf(tmp_path: Path):
    fake = tmp_path / "x.gguf"
    fake.write_text("not a gguf file")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(str(fake), device="cpu")
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        load_model(str(tmp_path / "missing.gguf"), device="cpu")


def test_model_that_is_not_a_causal_lm(tmp_path: Path):
    ViTConfig().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="'vit' model, not a causal language model"):
        load_model(str(tmp_path), device="cpu")


def test_remote_code_is_refused_by_default(tmp_path: Path):
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "padding_audit_custom",
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomModel",
                },
            }
        )
    )
    (tmp_path / "configuration_custom.py").write_text("raise RuntimeError('remote code ran')\n")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="needs remote code.*trust_remote_code is off by default"):
        load_model(str(tmp_path), device="cpu")


def test_unsupported_attention_implementation(tmp_path: Path):
    config = GraniteSWAConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    AutoModelForCausalLM.from_config(config, attn_implementation="eager").save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="does not support attn_implementation='sdpa'; try 'eager'"):
        load_model(str(tmp_path), device="cpu", attn_implementation="sdpa")


# --- the cache -----------------------------------------------------------------------


def test_cache_key_changes_with_the_source_file(tmp_path: Path):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" + bytes(4096))
    key = gguf_cache_key(source)
    assert key == gguf_cache_key(source)

    stat = source.stat()
    source.write_bytes(b"GGUF" + bytes(4095) + b"\x01")  # same size, other content
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    changed_content = gguf_cache_key(source)
    assert changed_content != key

    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched
    assert gguf_cache_key(source) not in (key, changed_content)


def test_interrupted_cache_write_leaves_nothing(tmp_path: Path):
    final = tmp_path / "smollm2-135m-model-abc"

    def write_then_fail(folder: Path) -> None:
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_cache_folder(final, write_then_fail)
    assert list(tmp_path.iterdir()) == []


def test_cache_write_keeps_a_complete_folder_written_by_another_process(tmp_path: Path):
    final = tmp_path / "smollm2-135m-model-abc"
    final.mkdir()
    (final / STAMP_FILE).write_text("{}")
    write_cache_folder(final, lambda folder: (folder / STAMP_FILE).write_text('{"late": 1}'))
    assert [entry.name for entry in tmp_path.iterdir()] == [final.name]
    assert (final / STAMP_FILE).read_text() == "{}"


def test_new_cache_removes_stale_ones(tmp_path: Path):
    old_model = tmp_path / "smollm2-135m-model-oldkey"
    old_tokenizer = tmp_path / "smollm2-135m-tokenizer-oldkey"
    old_tmp = tmp_path / ".tmp-smollm2-135m-model-newkey-x1"
    fresh_tmp = tmp_path / ".tmp-smollm2-135m-model-newkey-x2"  # maybe another process, still writing
    unrelated = tmp_path / "something-else"
    for folder in (old_model, old_tokenizer, old_tmp, fresh_tmp, unrelated):
        folder.mkdir()
    long_ago = 1_000_000_000  # 2001: older than any stale limit, without reading the clock
    os.utime(old_tmp, (long_ago, long_ago))

    cache_quietly(
        tmp_path / "smollm2-135m-tokenizer-newkey",
        lambda folder: (folder / STAMP_FILE).write_text("{}"),
        "newkey",
    )
    remaining = sorted(entry.name for entry in tmp_path.iterdir())
    assert remaining == sorted([fresh_tmp.name, unrelated.name, "smollm2-135m-tokenizer-newkey"])
