import pytest

from hf_eval.scoring import TaskScore, infer_metric, macro, option_labels, parse_relations, parse_set


def test_exact_answer_scores_one():
    score = TaskScore("set")
    score.add(" genre: scary; year: 1960 s", " genre: scary; year: 1960 s")
    assert (score.precision, score.recall, score.f1, score.accuracy) == (1.0, 1.0, 1.0, 1.0)


def test_partial_answer():
    score = TaskScore("set")
    score.add("genre: scary; actor: tom", "genre: scary; year: 1960 s; director: eric")
    assert score.precision == 0.5 and score.recall == pytest.approx(1 / 3) and score.f1 == pytest.approx(0.4)


def test_reordered_respaced_recased_and_duplicated_answers_are_the_same_set():
    assert parse_set("Year:  1960   s ;genre: SCARY; genre: scary") == {("genre", "scary"), ("year", "1960 s")}
    score = TaskScore("set")
    score.add("year: 1960 s; genre: scary; genre: scary", " genre: scary; year: 1960 s")
    assert score.f1 == 1.0


@pytest.mark.parametrize("answer", ["", "   ", "I cannot help with that", ";;;", ": ; :", "genre:", None])
def test_malformed_or_empty_answers_predict_nothing(answer):
    score = TaskScore("set")
    score.add(answer, "genre: scary")
    assert score.n_pred == 0 and score.precision == 0.0 and score.recall == 0.0 and score.f1 == 0.0
    assert score.malformed == (1 if answer and answer.strip() else 0)


def test_malformed_parts_are_dropped_but_good_parts_count():
    score = TaskScore("set")
    score.add("genre scary; year: 1960 s; ???", "genre: scary; year: 1960 s")
    assert score.precision == 1.0 and score.recall == 0.5


def test_relations_keep_spans_with_tokenised_commas():
    assert parse_relations(" Live in: Emily Dickinson, Amherst , Mass; Kill: A, B") == {
        ("live in", "emily dickinson", "amherst , mass"), ("kill", "a", "b")}
    assert parse_relations("Live in: only one argument") == set()
    score = TaskScore("relation")
    score.add("Work for: Fred Bauman, Habitat for Humanity", " Work for: Fred Bauman, Habitat for Humanity; "
              "Work for: Fred Bauman, Yakima Valley Partners")
    assert score.precision == 1.0 and score.recall == 0.5


def test_empty_gold_and_empty_prediction():
    score = TaskScore("set")
    score.add("", "")
    assert score.accuracy == 1.0 and score.f1 == 0.0  # nothing to find: no P/R evidence either way


def test_exact_match_labels():
    score = TaskScore("exact")
    score.add(" Positive ", "positive")
    score.add("negative", "positive")
    assert score.accuracy == 0.5


def test_micro_average_over_examples_and_macro_over_tasks():
    ner = TaskScore("set")
    ner.add("a: x", "a: x; b: y")  # 1/1, 1/2
    ner.add("c: z; d: w", "c: z")  # 1/2, 1/1
    assert ner.precision == pytest.approx(2 / 3) and ner.recall == pytest.approx(2 / 3)
    labels = TaskScore("exact")
    labels.add("yes", "yes")
    averaged = macro({"ner": ner, "labels": labels})
    assert averaged["f1"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_metric_inference_on_paper_instructions():
    assert infer_metric('Given a phrase that describes the relationship between two words ... "relation1: word1, word2"',
                        [" Work for: A, B"]) == "relation"
    assert infer_metric("Please tell me all the entity words", [" person: A"]) == "set"
    assert infer_metric("Is this review positive or negative? Option: positive, negative", ["positive"]) == "exact"


def test_a_label_task_scores_accuracy_and_counts_an_answer_outside_its_options_as_malformed():
    prompt = "Which relation holds? \nOption: Organization based in, Located in, Live in, Work for, Kill \nAnswer:"
    score = TaskScore("exact", labels=option_labels(prompt))
    score.add(" Work for", " Work for")  # right
    score.add("work for.", " Work for")  # right: case, spacing and a final full stop do not count
    score.add(" Kill", " Work for")  # wrong, but one of the options
    score.add(" Work for: John Smith, IBM", " Work for")  # malformed: the extraction task's format
    score.add(" The first entity works there", " Live in")  # malformed: none of the options
    score.add("", " Kill")  # empty: wrong, not malformed
    summary = score.summary()
    assert summary["score_name"] == "accuracy" and summary["score"] == pytest.approx(2 / 6) == score.accuracy
    assert summary["malformed"] == 2 and summary["n_examples"] == 6
    # an extraction task's headline stays its F1
    ner = TaskScore("set")
    ner.add("a: x", "a: x; b: y")
    assert ner.summary()["score_name"] == "f1" and ner.summary()["score"] == pytest.approx(ner.f1)


def test_option_labels_read_the_option_line_only():
    assert option_labels("Text: a, b \nOption: yes, no \nAnswer:") == {"yes", "no"}
    assert option_labels("Options: Positive , Negative.") == {"positive", "negative"}
    assert option_labels("Is this review positive or negative?") == frozenset()
