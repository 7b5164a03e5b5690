"""The data-roots guard and atomic outputs (no Redis/Ray)."""

import pytest
from tasks.errors import InvalidInput
from tasks.paths import atomic_write, guarded_path


@pytest.fixture
def roots(tmp_path, monkeypatch, fresh_settings):
    datasets, models = tmp_path / "datasets", tmp_path / "models"
    datasets.mkdir()
    models.mkdir()
    (tmp_path / "secret.csv").write_text("a\n1\n")
    monkeypatch.setenv("TASKS_DATA_ROOTS", f"{datasets}:{models}")
    fresh_settings()
    return tmp_path


def test_paths_inside_a_root_are_accepted(roots):
    (roots / "datasets" / "in.csv").write_text("a\n1\n")
    assert guarded_path(str(roots / "datasets" / "in.csv"), must_exist=True) == (
        roots / "datasets" / "in.csv")
    assert guarded_path(str(roots / "models" / "sub" / "new.pkl")).parent.name == "sub"


@pytest.mark.parametrize("relative", [
    "secret.csv",                        # outside every root
    "datasets/../secret.csv",            # climbs out with ..
    "datasets-evil/x.csv",               # a sibling sharing the root's prefix
    "datasets/link.csv",                 # a symlink pointing outside
    "datasets/linkdir/secret.csv",       # a symlinked directory pointing outside
])
def test_paths_leaving_the_roots_are_refused(roots, relative):
    (roots / "datasets" / "link.csv").symlink_to(roots / "secret.csv")
    (roots / "datasets" / "linkdir").symlink_to(roots)
    with pytest.raises(InvalidInput, match="outside the data roots"):
        guarded_path(str(roots / relative))


def test_system_files_are_refused(roots):
    with pytest.raises(InvalidInput, match="outside the data roots"):
        guarded_path("/etc/passwd")


def test_missing_files_are_named(roots):
    with pytest.raises(InvalidInput, match="does not exist"):
        guarded_path(str(roots / "datasets" / "nope.csv"), must_exist=True, what="file_path")


def test_outputs_appear_whole_or_not_at_all(tmp_path):
    final = tmp_path / "out.csv"
    with atomic_write(final) as tmp:
        tmp.write_text("done\n")
        assert not final.exists()
    assert final.read_text() == "done\n"
    with pytest.raises(RuntimeError), atomic_write(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert final.read_text() == "done\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]
