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


def test_leftovers_of_a_killed_write_are_removed_on_the_next_run(tmp_path, caplog):
    import logging
    import os
    import subprocess
    import sys

    from hf_common.atomic import atomic_folder

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    stale_dir = tmp_path / f".out.tmp-{dead_pid}-x1y2"
    stale_dir.mkdir()
    (stale_dir / "half.safetensors").write_bytes(b"half")
    stale_file = tmp_path / f".out.old-{dead_pid}"
    stale_file.write_text("old")
    live = tmp_path / f".out.tmp-{os.getppid()}-busy"  # a write still in progress elsewhere: left alone
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead_pid}"  # another destination's leftovers are not ours to judge
    other.mkdir()
    with caplog.at_level(logging.WARNING), atomic_folder(tmp_path / "out", force=False) as tmp:
        (tmp / "x").write_text("new")
    assert not stale_dir.exists() and not stale_file.exists() and live.exists() and other.exists()
    assert (tmp_path / "out/x").read_text() == "new"
    assert str(stale_dir) in caplog.text and str(stale_file) in caplog.text


def test_outputs_get_the_permissions_of_any_file_the_user_writes(tmp_path):
    import os
    import stat

    from hf_common.atomic import atomic_folder, write_text_atomic

    old = os.umask(0o022)
    try:
        with atomic_folder(tmp_path / "out", force=False) as tmp:
            (tmp / "weights.bin").write_bytes(b"x")
            os.chmod(tmp / "weights.bin", 0o600)  # as safetensors writes it
        write_text_atomic(tmp_path / "report.json", "{}", force=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out/weights.bin").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "report.json").stat().st_mode) == 0o644
