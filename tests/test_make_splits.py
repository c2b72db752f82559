"""List parsing, the base/novel split rule, cls_labels and `retab make_splits` on hand-made trees."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retab import voc
from retab.cli import main as cli_main
from retab.misc.errors import RetabError
from retab.voc import save_label_png
from retab.stages.make_splits import make_splits, split_by_fold, splits_complete
from retab.voc import fold_list_path


def write_xml(path: Path, classes):
    objs = "".join(f"<object><name>{c}</name></object>" for c in classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename>{objs}</annotation>")


def build_tree(root: Path, samples: dict, train, val):
    """samples: name -> (xml classes, list of mask labels drawn as stripes)."""
    for name, (classes, mask_labels) in samples.items():
        write_xml(root / "Annotations" / f"{name}.xml", classes)
        mask = np.zeros((8, 12), np.uint8)
        for i, lab in enumerate(mask_labels):
            mask[:, 2 * i:2 * i + 2] = lab
        save_label_png(root / "SegmentationClassAug" / f"{name}.png", mask)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("".join(n + "\n" for n in train))
    (lists / "val.txt").write_text("".join(n + "\n" for n in val))


# fold novel labels: 0: 1-5, 1: 6-10, 2: 11-15, 3: 16-20
SAMPLES = {
    "2007_000001": (["aeroplane"], [1]),                     # novel in fold 0
    "2007_000002": (["car", "person"], [7, 15, 255]),        # novel in fold 1 (car 7) and fold 2 (person 15)
    "2008_000003": (["dog", "aeroplane"], [12]),             # XML names aeroplane, mask lacks it: base in fold 0; dog 12: novel in fold 2
    "2008_000004": (["sofa"], [18, 255]),                    # novel in fold 3
    "2009_000005": (["cat"], [8]),                           # val image: not in train_aug
}


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "VOC2012"
    build_tree(root, SAMPLES, train=["2007_000001", "2008_000003"], val=["2009_000005"])
    return root


def test_read_name_list_both_formats_and_npy(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("2007_000032\n\n2007_000039\n")
    sbd = tmp_path / "sbd.txt"
    sbd.write_text("/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
                   "/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n")
    arr = tmp_path / "names.npy"
    np.save(arr, np.array(["2007_000032", "2007_000039"]))
    expected = ["2007_000032", "2007_000039"]
    assert voc.read_name_list(plain) == expected
    assert voc.read_name_list(sbd) == expected
    assert voc.read_name_list(arr) == expected
    with pytest.raises(RetabError, match="missing.txt"):
        voc.read_name_list(tmp_path / "missing.txt")


def test_folds_partition_the_labels():
    for fold in range(4):
        novel, base = voc.novel_labels(fold), voc.base_labels(fold)
        assert novel == [5 * fold + k for k in range(1, 6)]
        assert len(base) == 16 and 0 in base
        assert sorted(novel + base) == list(range(21))
    with pytest.raises(RetabError, match="fold"):
        voc.novel_labels(4)


def test_split_rule_uses_masks_not_xml():
    label_sets = {"a": frozenset({0, 1}), "b": frozenset({0, 12, 255}), "c": frozenset({0, 255})}
    assert split_by_fold(label_sets, 0) == (["b", "c"], ["a"])
    assert split_by_fold(label_sets, 2) == (["a", "c"], ["b"])
    assert voc.is_novel_mask(np.array([[0, 255], [3, 3]], np.uint8), 0)
    assert not voc.is_novel_mask(np.array([[0, 255], [6, 6]], np.uint8), 0)


def test_labels_from_xml_and_unknown_class(tmp_path):
    write_xml(tmp_path / "a.xml", ["dog", "person", "dog"])
    vec = voc.labels_from_xml(tmp_path / "a.xml")
    assert vec.dtype == np.float32 and vec.shape == (20,)
    assert np.flatnonzero(vec).tolist() == [voc.CATEGORY_INDEX["dog"], voc.CATEGORY_INDEX["person"]]
    write_xml(tmp_path / "b.xml", ["unicorn"])
    with pytest.raises(RetabError, match=r"b\.xml.*unicorn"):
        voc.labels_from_xml(tmp_path / "b.xml")
    (tmp_path / "c.xml").write_text("<annotation><object>")
    with pytest.raises(RetabError, match=r"c\.xml.*malformed"):
        voc.labels_from_xml(tmp_path / "c.xml")


def test_make_splits_writes_all_lists(tree, tmp_path, capsys):
    out = tmp_path / "lists"
    assert cli_main(["make_splits", "--voc12_root", str(tree), "--out_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert splits_complete(out)
    train_aug = voc.read_name_list(out / "train_aug.txt")
    assert train_aug == ["2007_000001", "2007_000002", "2008_000003", "2008_000004"]
    assert (out / "train_aug.txt").read_text().splitlines()[0] == \
        "/JPEGImages/2007_000001.jpg /SegmentationClassAug/2007_000001.png"
    expected_novel = {0: ["2007_000001"], 1: ["2007_000002"], 2: ["2007_000002", "2008_000003"],
                      3: ["2008_000004"]}
    for fold in range(4):
        novel = voc.read_name_list(fold_list_path(out, fold, "novel"))
        base = voc.read_name_list(fold_list_path(out, fold, "base"))
        assert novel == expected_novel[fold]
        assert sorted(base + novel) == train_aug
        assert voc.read_name_list(fold_list_path(out, fold, "base", ".npy")) == base
        assert voc.read_name_list(fold_list_path(out, fold, "novel", ".npy")) == novel
        # the printed counts match the files
        assert f"fold {fold} (novel labels {5 * fold + 1}-{5 * fold + 5}): {len(base)} base / {len(novel)} novel" \
            in printed
    # the XML of 2008_000003 names aeroplane but its mask does not: base in fold 0
    assert "2008_000003" in voc.read_name_list(fold_list_path(out, 0, "base"))


def test_cls_labels_round_trip(tree, tmp_path):
    out = tmp_path / "lists"
    make_splits(tree, out)
    table = voc.load_cls_labels(out / "cls_labels.npy")
    assert set(table) == set(SAMPLES)
    for name, (classes, _) in SAMPLES.items():
        expected = np.zeros(20, np.float32)
        expected[[voc.CATEGORY_INDEX[c] for c in classes]] = 1
        assert table[name].dtype == np.float32
        np.testing.assert_array_equal(table[name], expected)
    # ImageLabels reads the same from the table as from the XML files
    from_table, from_xml = voc.ImageLabels(cls_labels_path=out / "cls_labels.npy"), voc.ImageLabels(tree)
    for name in SAMPLES:
        np.testing.assert_array_equal(from_table(name), from_xml(name))


def test_image_without_labels_is_an_error(tmp_path):
    write_xml(tmp_path / "Annotations" / "empty.xml", [])
    with pytest.raises(RetabError, match="empty.*no image-level labels"):
        voc.ImageLabels(tmp_path)("empty")


def test_make_splits_refuses_output_inside_dataset(tree):
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    with pytest.raises(RetabError, match="must not be inside the dataset"):
        make_splits(tree, tree / "lists")
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before


def test_make_splits_bad_input(tree, tmp_path, capsys):
    (tree / "Annotations" / "2008_000004.xml").unlink()
    rc = cli_main(["make_splits", "--voc12_root", str(tree), "--out_dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "2008_000004.xml" in err and "not found" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "train_aug.txt").exists()


def test_unknown_mask_value_is_an_error(tree, tmp_path):
    save_label_png(tree / "SegmentationClassAug" / "2008_000004.png", np.full((4, 4), 42, np.uint8))
    with pytest.raises(RetabError, match=r"2008_000004\.png.*unknown label values \[42\]"):
        make_splits(tree, tmp_path / "o")


def test_label_png_keeps_values_not_colours(tmp_path):
    labels = np.array([[0, 1, 20], [255, 7, 0]], np.uint8)
    save_label_png(tmp_path / "x.png", labels)
    with Image.open(tmp_path / "x.png") as img:
        assert img.mode == "P"
    np.testing.assert_array_equal(voc.load_label_png(tmp_path / "x.png"), labels)


def test_make_splits_rerun_over_the_same_dataset_does_nothing_and_another_remakes(tree, tmp_path, capsys,
                                                                                  monkeypatch):
    out = tmp_path / "lists"
    link = tmp_path / "linked_voc"
    link.symlink_to(tree)
    assert cli_main(["make_splits", "--voc12_root", str(link), "--out_dir", str(out)]) == 0
    assert (out / ".voc12home").read_text() == f"{tree.resolve()}\n"  # the dataset, through the link
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    monkeypatch.setenv("RETAB_STEP", "make_splits")  # as under a driver
    assert cli_main(["make_splits", "--voc12_root", str(tree), "--out_dir", str(out)]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    assert capsys.readouterr().out.splitlines()[-1] == "[make_splits] nothing to do: done before"
    # an incomplete folder, or lists of another dataset, are made again
    (out / "val.txt").unlink()
    assert cli_main(["make_splits", "--voc12_root", str(tree), "--out_dir", str(out)]) == 0
    assert (out / "val.txt").is_file()
    other = tmp_path / "other"
    shutil.copytree(tree, other)
    assert cli_main(["make_splits", "--voc12_root", str(other), "--out_dir", str(out)]) == 0
    assert (out / ".voc12home").read_text() == f"{other.resolve()}\n"
