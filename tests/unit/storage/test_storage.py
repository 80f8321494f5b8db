"""Reading stored states in every supported format, the checks against a model, atomic writing."""

import os
import stat

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from extraction.storage.safetensors_writer import SafetensorsRowWriter, write_safetensors_atomic
from extraction.storage.stored_states import read_states, validate_states


@pytest.fixture
def states():
    return torch.randn(6, 3, 8, generator=torch.Generator().manual_seed(0))  # (N, L, d)


def _files_in(folder):
    return sorted(p.name for p in folder.iterdir())


# --- reading ---------------------------------------------------------------------------


def test_safetensors_single_tensor_and_metadata(tmp_path, states):
    path = tmp_path / "s.safetensors"
    save_file({"anything": states}, path, metadata={"model": "m", "layers": "[1, 2, 3]"})
    stored = read_states(path)
    assert torch.equal(stored.tensor, states)
    assert stored.key == "anything"
    assert stored.metadata["model"] == "m"
    assert stored.stored_layers == [1, 2, 3]
    from_bytes = read_states(path.read_bytes(), name="upload.safetensors")
    assert torch.equal(from_bytes.tensor, states)


def test_reduced_precision_file_is_read_as_float32_and_its_dtype_kept(tmp_path, states):
    path = tmp_path / "b.safetensors"
    save_file({"h": states.to(torch.bfloat16)}, path)
    stored = read_states(path)
    assert stored.stored_dtype == "bfloat16"
    assert stored.tensor.dtype == torch.float32
    assert torch.equal(stored.tensor, states.to(torch.bfloat16).float())


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_several_tensors_need_a_key_and_are_named(tmp_path, states, suffix):
    path = tmp_path / f"many{suffix}"
    tensors = {"hidden": states, "other": states[:, 0].clone()}
    if suffix == ".safetensors":
        save_file(tensors, path)
    elif suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in tensors.items()})
    else:
        torch.save(tensors, path)
    with pytest.raises(ValueError, match=r"several tensors.*hidden \(6, 3, 8\).*other \(6, 8\).*--key"):
        read_states(path)
    assert torch.equal(read_states(path, key="hidden").tensor, states)
    with pytest.raises(ValueError, match=r"no tensor named 'missing'.*hidden"):
        read_states(path, key="missing")


def test_npy_and_pt_variants(tmp_path, states):
    np.save(tmp_path / "a.npy", states.numpy())
    assert torch.equal(read_states(tmp_path / "a.npy").tensor, states)
    np.save(tmp_path / "d.npy", states.numpy().astype(np.float64))
    assert read_states(tmp_path / "d.npy").stored_dtype == "float64"
    torch.save(states, tmp_path / "t.pt")
    assert torch.equal(read_states(tmp_path / "t.pt").tensor, states)
    torch.save(list(states), tmp_path / "rows.pt")  # one tensor per text
    assert torch.equal(read_states(tmp_path / "rows.pt").tensor, states)


class _Payload:
    """Anything pickled that is not a tensor: torch.load(weights_only=True) must refuse it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pt_is_loaded_with_weights_only(tmp_path, states, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"h": states, "x": _Payload()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_states(path)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("suffix", [".safetensors", ".npy", ".npz", ".pt"])
def test_truncated_files_are_refused_with_a_clear_message(tmp_path, states, suffix):
    path = tmp_path / f"full{suffix}"
    if suffix == ".safetensors":
        save_file({"h": states}, path)
    elif suffix == ".npy":
        np.save(path, states.numpy())
    elif suffix == ".npz":
        np.savez(path, h=states.numpy())
    else:
        torch.save(states, path)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"cut" + suffix.replace(".", r"\.") + r".*(truncated or corrupt|not a)"):
        read_states(cut)


def test_integer_values_wrong_types_and_missing_files(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(12).reshape(6, 2))
    with pytest.raises(ValueError, match="int64 values; hidden states must be floating point"):
        read_states(tmp_path / "i.npy")
    save_file({"h": torch.zeros(3, 4, dtype=torch.int32)}, tmp_path / "i.safetensors")
    with pytest.raises(ValueError, match="int32 values"):
        read_states(tmp_path / "i.safetensors")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported file type '\.csv'.*\.safetensors"):
        read_states(tmp_path / "x.csv")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_states(tmp_path / "empty.npy")
    with pytest.raises(ValueError, match="no such file"):
        read_states(tmp_path / "missing.safetensors")


# --- checking --------------------------------------------------------------------------


def test_validate_one_layer_and_several(states):
    one, layers = validate_states(states[:, 0], num_texts=6, hidden_size=8, num_states=5)
    assert one.shape == (6, 1, 8) and layers == [4]  # default: the last hidden state
    assert validate_states(states[:, 0], 6, 8, 5, layer=-2)[1] == [3]
    full, layers = validate_states(torch.randn(6, 5, 8), 6, 8, 5)
    assert full.shape == (6, 5, 8) and layers == [0, 1, 2, 3, 4]
    assert validate_states(states, 6, 8, 5, layers=[0, 2, 4])[1] == [0, 2, 4]


@pytest.mark.parametrize(
    ("shape", "kwargs", "message"),
    [
        ((6,), {}, r"shape \(6,\): expected \(N, d\)"),
        ((6, 3, 8, 1), {}, r"expected \(N, d\) for one layer or \(N, L, d\)"),
        ((5, 8), {}, "5 rows but 6 texts"),
        ((6, 16), {}, "width 16 but the model's hidden size is 8"),
        ((6, 3, 8), {}, "3 layers but the model has 5 hidden states"),
        ((6, 3, 8), {"layers": [0, 1]}, "3 layers but 2 layer indices"),
        ((6, 3, 8), {"layer": 2}, "use --layers"),
        ((6, 8), {"layer": 5}, r"layer 5 out of range.*0\.\.4"),
    ],
)
def test_validate_refuses_with_a_message(shape, kwargs, message):
    with pytest.raises(ValueError, match=message):
        validate_states(torch.zeros(shape), num_texts=6, hidden_size=8, num_states=5, **kwargs)


def test_validate_refuses_nan_and_inf_naming_rows(states):
    bad = states.clone()
    bad[2, 1, 3] = float("nan")
    bad[4, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 NaN/inf values in 2 rows \(rows 2, 4\)"):
        validate_states(bad, 6, 8, 5, layers=[0, 1, 2])


# --- writing ---------------------------------------------------------------------------


def test_atomic_write_refuses_to_overwrite(tmp_path, states):
    path = tmp_path / "w.safetensors"
    write_safetensors_atomic(path, {"h": states}, {"k": "v"})
    with pytest.raises(FileExistsError, match="already exists"):
        write_safetensors_atomic(path, {"h": states * 2})
    assert torch.equal(read_states(path).tensor, states)
    write_safetensors_atomic(path, {"h": states * 2}, overwrite=True)
    assert torch.equal(read_states(path).tensor, states * 2)
    assert _files_in(tmp_path) == ["w.safetensors"]


def test_row_writer_streams_rows_with_metadata(tmp_path, states):
    path = tmp_path / "rows.safetensors"
    with SafetensorsRowWriter(path, "hidden_states", tuple(states.shape), torch.float32, {"model": "m"}) as writer:
        writer.write(states[:4])
        assert torch.equal(writer.read_rows([3, 0]), states[[3, 0]])
        assert not path.exists()  # nothing at the target before commit
        writer.write(states[4:])
        writer.commit({"verification": "ok"})
    with safe_open(path, "pt") as handle:
        assert handle.keys() == ["hidden_states"]
        assert handle.metadata() == {"model": "m", "verification": "ok"}
        assert torch.equal(handle.get_tensor("hidden_states"), states)
    assert _files_in(tmp_path) == ["rows.safetensors"]
    # The renamed file has ordinary permissions, like one made by open(), not mkstemp's owner-only.
    (tmp_path / "plain").write_bytes(b"")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)


def test_row_writer_metadata_larger_than_the_reserve(tmp_path, states):
    path = tmp_path / "big.safetensors"
    with SafetensorsRowWriter(path, "hidden_states", tuple(states.shape), torch.bfloat16) as writer:
        writer.write(states)
        writer.commit({"long": "x" * 100_000})
    stored = read_states(path)
    assert stored.metadata["long"] == "x" * 100_000
    assert torch.equal(stored.tensor, states.to(torch.bfloat16).float())
    assert _files_in(tmp_path) == ["big.safetensors"]


def test_interrupted_or_incomplete_writes_leave_nothing(tmp_path, states):
    path = tmp_path / "partial.safetensors"
    with pytest.raises(KeyboardInterrupt):
        with SafetensorsRowWriter(path, "hidden_states", tuple(states.shape)) as writer:
            writer.write(states[:2])
            raise KeyboardInterrupt
    with pytest.raises(ValueError, match="only 2 of 6 rows"):
        with SafetensorsRowWriter(path, "hidden_states", tuple(states.shape)) as writer:
            writer.write(states[:2])
            writer.commit()
    with pytest.raises(ValueError, match="do not fit"):
        with SafetensorsRowWriter(path, "hidden_states", tuple(states.shape)) as writer:
            writer.write(states[:, :2])
    assert _files_in(tmp_path) == []
