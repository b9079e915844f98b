from config_reference import document

from hf_common.config_file import NOT_RECORDED

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_the_config_reference_lists_every_key_of_both_commands():
    assert (ROOT / "docs/config-files.md").read_text() == document(), \
        "regenerate: python tests/support/config_reference.py > docs/config-files.md"


def test_not_recorded_options_exist():
    from hf_analyze.cli import main as analyze
    from hf_fuse.cli import main as fuse

    names = {p.name for command in (fuse, analyze) for p in command.params}
    assert NOT_RECORDED - {"config", "help", "version"} <= names
