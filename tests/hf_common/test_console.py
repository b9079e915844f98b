"""Log records reach the terminal once each, their level shown once."""

import logging

from hf_common.console import setup_logging


def test_a_warning_shows_its_level_once_and_its_message(capsys):
    setup_logging(debug=False)
    logging.getLogger("hf_fuse.methods.distill").warning("source 0: 3 answers dropped")
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "source 0: 3 answers dropped" in err and "WARNING:" not in err
    logging.getLogger("hf_fuse").info("not shown without --debug")
    assert "not shown" not in capsys.readouterr().err
