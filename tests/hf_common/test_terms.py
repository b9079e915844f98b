"""The licence keys a card may claim from its inputs' licences (hf_common.terms)."""

from hf_common.terms import InputTerms, front_matter, licence_text, notices, public_name


def _inputs(*licences):
    return [InputTerms(f"{'target' if i == 0 else 'source 0'} adapter", f"a{i}", licence, "read") for i, licence in
            enumerate(licences)]


def test_one_licence_when_every_input_agrees_other_when_they_differ_nothing_when_none_is_known():
    assert front_matter(_inputs("apache-2.0", "Apache-2.0")) == {"license": "apache-2.0"}
    assert front_matter(_inputs("apache-2.0", "gemma")) == {"license": "other", "license_name": "apache-2.0-and-gemma",
                                                             "license_link": "LICENSE.md"}
    assert front_matter(_inputs("mit", None))["license_name"] == "mit-and-unknown"
    assert front_matter(_inputs(None, None)) == {}


def test_warnings_name_restrictive_source_licences_only():
    assert notices(_inputs("gemma", "apache-2.0"), "hypernet") == []  # the target's own terms are the user's
    [warning] = notices(_inputs("apache-2.0", "gemma"), "hypernet")
    assert "source 0 adapter (a1) is under the 'gemma' licence and read (--method hypernet)" in warning


def test_names_are_hub_ids_or_folder_names_never_local_paths():
    assert public_name("google/gemma-3-270m") == "google/gemma-3-270m"
    assert public_name("/tmp/work/example-output/smollm2-ner-expert") == "smollm2-ner-expert"
    assert public_name(None) == "not recorded" and licence_text(None) == "unknown (not written down)"
