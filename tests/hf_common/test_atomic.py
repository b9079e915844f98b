import pytest

from hf_common.atomic import atomic_folder, check_output_path, write_text_atomic
from hf_common.errors import FileAccessError, OutputExistsError


def test_folder_appears_only_on_success(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(out, force=False) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # neither the output nor a temporary folder is left behind

    with atomic_folder(out, force=False) as tmp:
        (tmp / "done.txt").write_text("ok")
    assert (out / "done.txt").read_text() == "ok"


def test_existing_folder_needs_force_and_survives_a_failed_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OutputExistsError, match="--force"), atomic_folder(out, force=False):
        pass
    with pytest.raises(RuntimeError), atomic_folder(out, force=True):
        raise RuntimeError("boom")
    assert (out / "keep.txt").read_text() == "user data"
    with atomic_folder(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_text_file_and_missing_parent(tmp_path):
    path = tmp_path / "report.json"
    write_text_atomic(path, "{}", force=False)
    with pytest.raises(OutputExistsError):
        write_text_atomic(path, "{}", force=False)
    write_text_atomic(path, "[]", force=True)
    assert path.read_text() == "[]"
    with pytest.raises(FileAccessError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.json", False)
