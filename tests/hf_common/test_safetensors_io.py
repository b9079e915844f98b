import numpy as np
import pytest
from safetensors.numpy import save_file

from hf_common.errors import AdapterFormatError
from hf_common.safetensors_io import SafetensorsFile, float32_to_bf16_bits, write_safetensors


def test_reads_what_safetensors_writes(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones((2, 2), np.float16)}
    save_file(arrays, tmp_path / "x.safetensors")
    reader = SafetensorsFile(tmp_path / "x.safetensors")
    assert sorted(reader.keys()) == ["a", "b"]
    np.testing.assert_array_equal(reader.float32("a"), arrays["a"])
    assert reader.dtype("b") == "F16" and reader.float32("b").dtype == np.float32


def test_bf16_matches_torch(tmp_path):
    import torch
    from safetensors.torch import save_file as save_torch

    tensor = torch.randn(5, 7).to(torch.bfloat16)
    save_torch({"w": tensor}, tmp_path / "bf.safetensors")
    reader = SafetensorsFile(tmp_path / "bf.safetensors")
    assert reader.dtype("w") == "BF16"
    np.testing.assert_array_equal(reader.float32("w"), tensor.float().numpy())
    # our writer's rounding agrees with torch's float32 -> bfloat16 conversion
    values = torch.randn(1000)
    np.testing.assert_array_equal(float32_to_bf16_bits(values.numpy()), values.to(torch.bfloat16).view(torch.int16).numpy()
                                  .view(np.uint16))


def test_writer_round_trip_with_bf16(tmp_path):
    values = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    write_safetensors(tmp_path / "w.safetensors", {"x": float32_to_bf16_bits(values)}, dtypes={"x": "BF16"})
    back = SafetensorsFile(tmp_path / "w.safetensors").float32("x")
    np.testing.assert_allclose(back, values, rtol=1e-2)


@pytest.mark.parametrize("cut", [3, 20, -5])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    save_file({"a": np.zeros((16, 16), np.float32)}, tmp_path / "x.safetensors")
    data = (tmp_path / "x.safetensors").read_bytes()
    (tmp_path / "x.safetensors").write_bytes(data[:cut])
    with pytest.raises(AdapterFormatError, match="x.safetensors"):
        SafetensorsFile(tmp_path / "x.safetensors")


def test_garbage_header_is_a_clear_error(tmp_path):
    (tmp_path / "x.safetensors").write_bytes((10).to_bytes(8, "little") + b"not json!!" + b"\0" * 8)
    with pytest.raises(AdapterFormatError, match="malformed safetensors header"):
        SafetensorsFile(tmp_path / "x.safetensors")


def test_overlapping_tensors_are_refused(tmp_path):
    import json
    import struct

    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}  # b starts inside a
    blob = json.dumps(header).encode()
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + bytes(12))
    with pytest.raises(AdapterFormatError, match="'a' and 'b' overlap in the data section"):
        SafetensorsFile(path)
