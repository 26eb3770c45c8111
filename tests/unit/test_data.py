from pathlib import Path

import pytest

from launch.synthetic_images import make_image_folder
from model_artifact.preprocessing import Preprocessing, eval_transform
from trainer.data import UNREADABLE, ImageDataset, check_unreadable, scan_channel
from trainer.errors import ClientError


def test_classes_come_from_sorted_folders(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", per_class=2, classes=("dog", "cat"))
    channel = scan_channel("train", tmp_path / "train")
    assert channel.classes == ("cat", "dog")
    assert [label for _, label in channel.samples] == [0, 0, 1, 1]


def test_valid_may_lack_a_class_but_not_add_one(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "valid", per_class=1, classes=("cat",))
    assert len(scan_channel("valid", tmp_path / "valid", ("cat", "dog"))) == 1
    make_image_folder(tmp_path / "valid", per_class=1, classes=("fox",))
    with pytest.raises(ClientError, match="classes the train channel lacks: fox"):
        scan_channel("valid", tmp_path / "valid", ("cat", "dog"))


def test_missing_channel_and_empty_class_are_client_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="channel 'valid' is missing"):
        scan_channel("valid", tmp_path / "valid")
    make_image_folder(tmp_path / "train", per_class=1)
    (tmp_path / "train" / "bird").mkdir()
    with pytest.raises(ClientError, match="class 'bird' in channel 'train' is empty"):
        scan_channel("train", tmp_path / "train")


def test_unreadable_file_is_marked_not_fatal(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", per_class=2)
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    channel = scan_channel("train", tmp_path / "train")
    dataset = ImageDataset(channel, eval_transform(Preprocessing.for_image_size(32)), 32)
    labels = [dataset[i][1] for i in range(len(dataset))]
    assert labels.count(UNREADABLE) == 1
    assert dataset[0][0].shape == (3, 32, 32)


def test_more_than_five_percent_unreadable_fails(tmp_path: Path) -> None:
    make_image_folder(tmp_path / "train", per_class=10)
    channel = scan_channel("train", tmp_path / "train")
    check_unreadable(channel, 1)  # 5% is tolerated
    with pytest.raises(ClientError, match=r"2 of 20 files \(10%\)"):
        check_unreadable(channel, 2)
