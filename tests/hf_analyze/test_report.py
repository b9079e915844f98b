from hf_analyze.report import _untouched_rows


def test_untouched_modules_are_summarised_by_reason_layers_and_roles():
    far = "the layer is outside every source's layer map"
    unmatched = [{"module": f"model.layers.{layer}.self_attn.{p}_proj", "role": f"attn_{p}", "layer": layer, "reason": far}
                 for layer in (0, 1, 2, 5) for p in "qv"]
    unmatched.append({"module": "lm_head", "role": None, "layer": None, "reason": "not inside a numbered transformer layer"})
    rows = _untouched_rows(unmatched)
    assert rows == [["8 modules: layers 0-2, 5 (attn_q, attn_v)", far],
                    ["lm_head", "not inside a numbered transformer layer"]]


def test_few_modules_are_named_one_by_one():
    few = [{"module": f"model.layers.{i}.mlp.up_proj", "role": "mlp_up", "layer": i, "reason": "r"} for i in range(3)]
    assert [row[0] for row in _untouched_rows(few)] == [e["module"] for e in few]
