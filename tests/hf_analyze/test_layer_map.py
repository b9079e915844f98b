import json

import pytest

from hf_analyze.layer_map import apply_transfer_ratio, build_layer_maps, proportional_map, tail_map
from hf_common.errors import ConfigError, InputError


def test_tail_map_llama_32_to_qwen_28():
    pairs = tail_map(32, 28)
    assert pairs[0] == (4, 0) and pairs[-1] == (31, 27) and len(pairs) == 28


def test_tail_map_shallower_target():
    assert tail_map(4, 6) == [(0, 2), (1, 3), (2, 4), (3, 5)]


def test_tail_map_equal_depths_is_identity():
    assert tail_map(3, 3) == [(0, 0), (1, 1), (2, 2)]


def test_transfer_ratio_keeps_the_last_pairs():
    pairs = tail_map(32, 28)
    assert apply_transfer_ratio(pairs, 0.5) == pairs[-14:]
    assert apply_transfer_ratio(pairs, 0.3) == pairs[-8:]  # floor(0.3 * 28) = 8
    assert apply_transfer_ratio(pairs, 0.01) == pairs[-1:]  # at least one pair
    assert apply_transfer_ratio(pairs, 1.0) == pairs
    assert apply_transfer_ratio([], 0.5) == []


def test_proportional_map_lines_up_first_and_last():
    pairs = proportional_map(5, 3)
    assert pairs == [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2)]
    assert proportional_map(1, 7) == [(0, 6)]


def test_map_file_forms(tmp_path):
    common = tmp_path / "common.json"
    common.write_text(json.dumps([[0, 1], [2, 0]]))
    assert build_layer_maps(str(common), 1.0, 3, [2, 4], ["a", "b"]) == [[(0, 1), (2, 0)]] * 2
    per_source = tmp_path / "per.json"
    per_source.write_text(json.dumps({"sources": {"0": [[1, 1]], "b": [[2, 3]]}}))
    assert build_layer_maps(str(per_source), 1.0, 3, [2, 4], ["a", "b"]) == [[(1, 1)], [(2, 3)]]


@pytest.mark.parametrize("content, message", [
    ("[[0, 9]]", "out of range"),
    ("[[0]]", "is not a [target_layer, source_layer] pair"),
    ('{"sources": {"0": [[0, 0]]}}', "no map for source 1"),
    ("{oops", "malformed JSON"),
    ('{"pairs": []}', "expected a list of pairs"),
])
def test_bad_map_files(tmp_path, content, message):
    path = tmp_path / "map.json"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        build_layer_maps(str(path), 1.0, 3, [2, 4], ["a", "b"])
    assert message in str(info.value) and "map.json" in str(info.value)


def test_unknown_method_names_the_flag():
    with pytest.raises(ConfigError, match="--layer-map"):
        build_layer_maps("diagonal", 1.0, 3, [2], ["a"])
