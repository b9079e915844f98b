"""The benchmark's derived tasks: a CoNLL04 relation-classification task built from the extraction records."""

import json
from pathlib import Path

import pytest

from benchmarks.cross_family_setup import FILES, MODES, split
from benchmarks.derived_tasks import derive, first_triple, relation_choice
from hf_eval.scoring import infer_metric, option_labels

SHARED = Path(__file__).resolve().parents[3] / "shared/data/uie"
INSTRUCTION = ('Given a phrase that describes the relationship between two words, extract the words and the lexical '
               'relationship between them. The output format should be "relation1: word1, word2; relation2: word3, '
               'word4". \nOption: Organization based in, Located in, Live in, Work for, Kill \nText: {} \nAnswer:')


def _record(text: str, output: str, history: bool = True) -> dict:
    record = {"instruction": INSTRUCTION.format(text), "input": text, "output": output}
    if history:
        record["history"] = [[INSTRUCTION.format("Oswald shot Kennedy ."), " Kill: Oswald, Kennedy"]]
    return record


def test_a_record_becomes_a_question_about_its_first_pair_answered_by_the_relation_alone():
    text = "John Smith , a spokesman for IBM in Armonk , N.Y. , said ."
    derived = relation_choice(_record(text, " Work for: John Smith, IBM; Organization based in: IBM, Armonk , N.Y."))
    prompt = derived["instruction"]
    assert derived["output"] == " Work for"
    assert "\nOption: Organization based in, Located in, Live in, Work for, Kill \n" in prompt
    assert f"\nText: {text} \n" in prompt and "First entity: John Smith \nSecond entity: IBM \nAnswer:" in prompt
    assert "Armonk" not in prompt.split("Text:")[1].split("\n", 1)[1]  # only the first pair is asked about
    assert derived["history"] == [[derived["history"][0][0], " Kill"]] and "First entity: Oswald" in derived["history"][0][0]
    assert option_labels(prompt) == {"organization based in", "located in", "live in", "work for", "kill"}
    assert infer_metric(prompt, [derived["output"]]) == "exact"  # scored by accuracy, not as triples
    # a comma inside an entity (", N.Y.") stays in it: the pair splits at the first ", " after a word
    assert first_triple(" Located in: Armonk , N.Y., United States") == ("Located in", "Armonk , N.Y.", "United States")


def test_a_record_with_no_triple_stops_the_benchmark_with_the_task_named():
    records = [_record("A sentence .", " Work for: A, B"), _record("Nothing here .", " ")]
    with pytest.raises(SystemExit, match="conll04-rc: records \\[1\\]"):
        derive("conll04-rc", records)


def test_the_derived_task_is_split_as_its_base_task_and_keeps_no_answers_in_its_prompts(tmp_path):
    data = tmp_path / "uie"
    data.mkdir()
    for task, name in FILES.items():
        rows = [_record(f"{task} sentence {i} .", f" Kill: P{i}, Q{i}") for i in range(300)]
        (data / name).write_text(json.dumps(rows))
    mode = MODES["cpu"]
    mode = type(mode)(**{**mode.__dict__, "sources": ("conll04-rc",)})
    paths = split(data, tmp_path / "work", mode)
    held = json.loads(paths["conll04-rc"]["heldout"].read_text())
    assert [r["output"] for r in held] == [" Kill"] * 60
    assert [r["instruction"].split("Text: ")[1].split(" \n")[0] for r in held] == [
        f"conll04 sentence {i} ." for i in range(240, 300)]
    unlabeled = json.loads(paths["conll04-rc"]["unlabeled"].read_text())
    assert len(unlabeled) == 216 and all("output" not in r and "First entity: P" in r["instruction"] for r in unlabeled)


def test_the_paper_conll04_file_derives_every_record_into_five_balanced_labels():
    path = SHARED / FILES["conll04"]
    if not path.exists():
        pytest.skip(f"{path} not present")
    derived = derive("conll04-rc", json.loads(path.read_text()))
    labels = [r["output"].strip() for r in derived]
    assert len(derived) == 300 and set(labels) == {"Organization based in", "Located in", "Live in", "Work for", "Kill"}
    held = labels[240:]
    assert max(held.count(x) for x in set(held)) / len(held) < 0.3  # chance is low: no label holds 30 % of held out
