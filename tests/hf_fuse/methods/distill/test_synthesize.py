"""Data-free distill (--synthesize N --seed-prompts FILE): the frame of the seeds, the filter, the cache and resume,
and refusals, through the CLI on tiny models."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_models import make_distill_setting

from hf_fuse.cli import main
from hf_fuse.methods.distill.excess import keep_highest
from hf_fuse.methods.distill.synthesize import (
    frame_of,
    line_heads,
    near_copy,
    similarity_to_seeds,
    synthesize,
)

FAST = ["--max-steps", "1", "--grad-accum", "1", "--batch-size", "2", "--gen-batch-size", "4", "--max-examples-per-file", "4",
        "--gen-max-new-tokens", "4"]
TEXTS = ["kubrick filmed in rome", "hanks drove a red car", "a blue truck from paris", "gamma met delta in 1960",
         "alpha and beta in rome"]


@pytest.fixture(scope="module")
def setting(fusion, tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    made = make_distill_setting(fusion, root, n_prompts=2)
    seeds = root / "seeds.json"
    seeds.write_text(json.dumps([{"instruction": f"List the entities. Text: {t} Answer:", "input": "", "output": ""}
                                 for t in TEXTS]))
    return {**made, "seeds": seeds}


def _argv(setting, out, *extra):
    return [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay", str(setting["replay"]), "-o", str(out),
            "--method", "distill", "--source-model", f"0={setting['source_base']}", "--seed-prompts", str(setting["seeds"]),
            *FAST, *map(str, extra)]


def _synthesis(out):
    return json.loads((out / "fusion_report.json").read_text())["distill"]["sources"]["0"]["synthesis"]


def test_the_frame_is_what_every_seed_shares_and_the_middles_what_varies():
    frame = frame_of([f"Do it. Text: {t} Answer:" for t in ("red car", "blue truck", "rome")])
    assert (frame.prefix, frame.suffix) == ("Do it. Text: ", " Answer:")
    assert frame.middles == ["red car", "blue truck", "rome"] and frame.fill("x") == "Do it. Text: x Answer:"


def test_line_heads_are_the_first_words_of_the_later_lines():
    assert line_heads("a red car\n Entities: red, car") == ("Entities:",)
    assert line_heads("one line only") == ()


def test_near_copies_are_exact_copies_and_heavy_trigram_overlap():
    assert near_copy("hanks drove a red car", "hanks drove a red car ")
    assert near_copy("hanks drove a red car today", "hanks drove a red car")
    assert not near_copy("kubrick filmed in rome", "a blue truck from paris")


def test_synthesis_writes_caches_and_resumes_and_the_filter_drops_copies(setting, tmp_path):
    work = tmp_path / "cache"
    first = CliRunner().invoke(main, _argv(setting, tmp_path / "a", "--synthesize", "6", "--gen-cache", work))
    assert first.exit_code == 0, first.output
    counts = _synthesis(tmp_path / "a")
    assert counts["candidates"] == 6 and counts["cached"] == 0 and counts["n_seed_prompts"] == 5
    assert sum(counts[k] for k in ("kept", "unfinished", "length", "lines", "copies", "unlikely")) == 6
    (cache,) = work.glob("synthesized-*.jsonl")
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert sorted(r["i"] for r in rows) == list(range(6))
    # a rerun writes nothing again; candidates that copy a seed, or each other, are dropped, and a novel, likely one
    # of the seeds' length is kept and answered by the expert
    novel = {"finished": True, "logprob": 0.0, "n_tokens": 5}
    rows[0] |= {"answer": TEXTS[1], **novel}  # a seed
    rows[1] |= {"answer": "hanks drove a red car fast", **novel}  # a near-copy of that seed
    rows[2] |= {"answer": "beta saw a truck in paris", **novel}
    rows[3] |= {"answer": "beta saw a truck in paris", **novel}  # a copy of the kept one
    rows[4] |= {"answer": "x", **novel}  # too short
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = CliRunner().invoke(main, _argv(setting, tmp_path / "b", "--synthesize", "6", "--gen-cache", work))
    assert again.exit_code == 0, again.output
    counts = _synthesis(tmp_path / "b")
    assert counts["cached"] == 6 and counts["copies"] == 3 and counts["length"] == 1 and counts["kept"] == 1
    stats = json.loads((tmp_path / "b/fusion_report.json").read_text())["distill"]["sources"]["0"]
    assert stats["prompts"] == 1  # the kept prompt (no --unlabeled): the expert answered it
    assert "synthesized prompts kept" in again.stderr
    # another temperature writes its own candidates, in its own cache, and says so
    cooler = CliRunner().invoke(main, _argv(setting, tmp_path / "c", "--synthesize", "6", "--gen-cache", work,
                                            "--synthesize-temperature", "0.5"))
    assert cooler.exit_code == 0, cooler.output
    counts = _synthesis(tmp_path / "c")
    assert counts["cached"] == 0 and counts["temperature"] == 0.5 and len(list(work.glob("synthesized-*.jsonl"))) == 2
    assert counts["writer"] == "target"


def test_the_source_expert_or_its_base_model_can_write_the_prompts(setting, tmp_path):
    work = tmp_path / "cache"
    runs = {}
    for writer in ("target", "source", "source-base"):
        result = CliRunner().invoke(main, _argv(setting, tmp_path / writer, "--synthesize", "4", "--gen-cache", work,
                                                "--synthesize-writer", writer))
        assert result.exit_code == 0, result.output
        runs[writer] = _synthesis(tmp_path / writer)
    assert runs["source"]["writer"] == "source" and runs["source"]["cached"] == 0  # its own candidates, its own cache
    caches = {p.name: [json.loads(line)["answer"] for line in p.read_text().splitlines()]
              for p in work.glob("synthesized-*.jsonl")}
    assert runs["source-base"]["writer"] == "source-base" and runs["source-base"]["cached"] == 0
    # three writers (the source's base with and without its adapter are two): three sets of candidates
    assert len(caches) == 3 and len(set(map(tuple, caches.values()))) == 3


ON_TOPIC = "kubrick drove a blue car in paris"  # the seeds' words, none of their word triples
OFF_TOPIC = "qqq zzz vvv www xxx yyy"


def _tiny(setting):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(setting["base"]).eval(), AutoTokenizer.from_pretrained(setting["base"])


def test_the_content_measure_puts_an_on_topic_prompt_nearer_the_seeds_than_an_off_topic_one(setting):
    model, tokenizer = _tiny(setting)
    scores = similarity_to_seeds(model, tokenizer, TEXTS, [OFF_TOPIC, ON_TOPIC])
    assert scores[1] > scores[0]
    most_similar = lambda values, fraction: keep_highest(dict(enumerate(values)), fraction)  # noqa: E731 (the filter's rule)
    assert most_similar(scores, 0.5) == {1} and most_similar(scores, 1.0) == {0, 1} and most_similar([], 0.5) == set()
    assert most_similar([0.2, 0.2, 0.1], 0.3) == {0}  # at least one, ties to the earlier


def test_the_content_filter_drops_an_off_topic_prompt_and_keeps_an_on_topic_one(setting, tmp_path):
    from hf_runtime.data import load_records

    model, tokenizer = _tiny(setting)
    seeds = load_records(setting["seeds"], prompts_only=True)
    synthesize(model, tokenizer, seeds, 2, tmp_path, seed=0, cutoff_len=256)  # writes the cache
    (cache,) = tmp_path.glob("synthesized-*.jsonl")
    rows = sorted((json.loads(line) for line in cache.read_text().splitlines()), key=lambda r: r["i"])
    novel = {"finished": True, "logprob": 0.0, "n_tokens": 8}
    for order in ((OFF_TOPIC, ON_TOPIC), (ON_TOPIC, OFF_TOPIC)):
        cache.write_text("".join(json.dumps(r | {"answer": text, **novel}) + "\n" for r, text in zip(rows, order)))
        both, counts = synthesize(model, tokenizer, seeds, 2, tmp_path, seed=0, cutoff_len=256)
        assert len(both) == 2 and counts["dissimilar"] == 0  # the form filter alone keeps both
        (kept,), counts = synthesize(model, tokenizer, seeds, 2, tmp_path, seed=0, cutoff_len=256, keep_similar=0.5)
        assert ON_TOPIC in kept.turns[0][0] and OFF_TOPIC not in kept.turns[0][0]
        assert counts["dissimilar"] == 1 and counts["kept"] == 1 and counts["keep_similar"] == 0.5
        assert kept.turns[0][0] == both[order.index(ON_TOPIC)].turns[0][0]  # in the seeds' frame, as the others


def test_the_content_filter_is_reported_by_the_cli(setting, tmp_path):
    result = CliRunner().invoke(main, _argv(setting, tmp_path / "out", "--synthesize", "4", "--gen-cache", tmp_path / "c",
                                            "--synthesize-keep-similar", "0.5"))
    assert result.exit_code == 0, result.output
    counts = _synthesis(tmp_path / "out")
    assert counts["keep_similar"] == 0.5 and counts["kept"] + counts["dissimilar"] <= 4
    assert "least like them in content" in result.stderr


@pytest.mark.parametrize("extra, message", [
    (["--synthesize", "4", "--seed-prompts-count-2"], "at least 3 --seed-prompts for each source; source 0 has 2"),
    (["--synthesize", "-1"], "--synthesize must be an integer from 0 to 100000"),
    (["--synthesize", "0"], "--synthesize N and --seed-prompts FILE go together"),
    (["--synthesize", "4", "--synthesize-temperature", "0"], "--synthesize-temperature must be a number above 0"),
    (["--synthesize", "4", "--synthesize-temperature", "nan"], "--synthesize-temperature must be a number above 0"),
    (["--synthesize", "4", "--synthesize-temperature", "2.5"], "--synthesize-temperature must be a number above 0"),
    (["--synthesize", "4", "--synthesize-writer", "both"], "--synthesize-writer"),
    (["--synthesize", "4", "--synthesize-keep-similar", "0"], "--synthesize-keep-similar must be a fraction above 0"),
    (["--synthesize", "4", "--synthesize-keep-similar", "1.5"], "--synthesize-keep-similar must be a fraction above 0"),
    (["--synthesize", "4", "--synthesize-keep-similar", "nan"], "--synthesize-keep-similar must be a fraction above 0"),
    (["--synthesize", "0", "--synthesize-keep-similar", "0.5"], "--synthesize-keep-similar filters written prompts"),
])
def test_bad_synthesis_options_are_refused_in_one_line(setting, tmp_path, extra, message):
    argv = _argv(setting, tmp_path / "out", *extra)
    if "--seed-prompts-count-2" in argv:
        two = tmp_path / "two.json"
        two.write_text(json.dumps(json.loads(setting["seeds"].read_text())[:2]))
        argv = [x for x in argv if x != "--seed-prompts-count-2"]
        argv[argv.index(str(setting["seeds"]))] = str(two)
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not Path(tmp_path / "out").exists()
