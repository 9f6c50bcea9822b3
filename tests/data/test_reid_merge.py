from __future__ import annotations

import pytest

from finprint.cli import main
from finprint.data.reid import load_reid
from finprint.distill.embed_data import load_reid_splits


def test_merged_folder_keeps_sources_apart_and_only_the_named_test_split(tmp_path, make_reid):
    real = make_reid(tmp_path / "real", identities=4)
    farm = tmp_path / "farm"
    make_reid(farm / "reid", identities=3, seed=1)  # a farm folder keeps its crops in reid/

    assert main(["data", "merge-reid", f"real={real}", f"farm={farm}", "--out", str(tmp_path / "both"), "--eval-from", "farm"]) == 0

    crops = load_reid(tmp_path / "both")[0].crops
    train = {c.identity for c in crops if c.subset == "train"}
    # both sources call a fish 0001: they stay two identities (0000 is Market's junk class, skipped in both)
    assert train == {f"real-{i:04d}" for i in range(1, 4)} | {f"farm-{i:04d}" for i in range(1, 3)}
    assert {c.identity for c in crops if c.subset != "train"} == {f"farm-{i:04d}" for i in range(1, 4)}
    assert all(c.path.is_symlink() and c.path.resolve().parent.parent in (real, farm / "reid") for c in crops)
    # the farm shares identities with its gallery, so validation is its gallery/query, not the real test split
    _, labels, names, val = load_reid_splits(tmp_path / "both")
    assert len(names) == 5 and set(val.gallery_ids) == {f"farm-{i:04d}" for i in range(1, 3)}


@pytest.mark.parametrize("argv, says", [
    (["real"], "a source is NAME=FOLDER"),
    (["re_al={real}"], "letters and digits"),
    (["real={real}", "--eval-from", "farm"], "not a source name"),
    (["real={real}/train"], "train/, gallery/ and query/"),
])
def test_bad_merge_input_is_one_line_exit_2_and_writes_nothing(tmp_path, make_reid, capsys, argv, says):
    real = make_reid(tmp_path / "real", identities=2)
    argv = [a.format(real=real) for a in argv]
    assert main(["data", "merge-reid", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_merge_never_writes_into_an_existing_folder(tmp_path, make_reid, capsys):
    real = make_reid(tmp_path / "real", identities=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("accepted earlier")
    assert main(["data", "merge-reid", f"real={real}", "--out", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
