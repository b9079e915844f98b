import pytest
from html_check import check_report

from hf_common.errors import OutputExistsError
from hf_common.html_report import HtmlReport, new_figure


def _fig():
    fig, (ax,) = new_figure()
    ax.plot([1, 2, 3], [3, 1, 2])
    return fig


def test_report_embeds_figures_escapes_text_and_writes_atomically(tmp_path):
    page = HtmlReport("a <title>", "sub & title")
    page.heading("numbers")
    page.table(["name", "value"], [["<b>", 0.123456], ["x", 3]])
    page.figure("curve.png", "a curve", _fig)
    page.warning("careful <now>")
    out = tmp_path / "r.html"
    page.write(out, force=False)
    held = check_report(out)
    assert held["images"] == 1 and "0.1235" in held["text"] and "<b>" in held["text"]  # escaped, shown as text
    assert list(page.pngs) == ["curve.png"]
    with pytest.raises(OutputExistsError):
        page.write(out, force=False)
    page.write_pngs(tmp_path)
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_without_matplotlib_the_tables_stay_and_the_report_says_what_is_missing(tmp_path):
    page = HtmlReport("t")
    page._plots = False  # as on an install without the reports extra
    page.figure("curve.png", "a curve", _fig)
    page.table(["a"], [[1]])
    page.write(tmp_path / "r.html", force=False)
    held = check_report(tmp_path / "r.html")
    assert held["images"] == 0 and "1 figures left out" in held["text"] and page.pngs == {}
