"""rosbag2 reading and writing: real bag files in both storage formats, damaged ones included."""

from __future__ import annotations

import os

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from ruamel.yaml import YAML

from ssnet_ros.bags import messages as bm
from ssnet_ros.bags.bagfile import (SENSOR_QOS, BagReader, BagWriter, image_topic, natural_key,
                              qos)
from ssnet_ros.errors import SSNetError

STORAGES = ["mcap", "sqlite3"]
SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}
T0 = 1_700_000_000_000_000_000


def pattern(i: int, h: int = 120, w: int = 160) -> np.ndarray:
    """A frame whose pixels identify it."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx + i) % 256, (yy * 2 + i) % 256, np.full_like(xx, i)],
                    axis=-1).astype(np.uint8)


def write_frames(path: Path, n: int, storage: str, size: tuple[int, int] = (120, 160)) -> Path:
    with BagWriter(path, storage=storage, custom={"k": "v"}) as writer:
        writer.add_topic("/cam/image_raw", bm.IMAGE, [SENSOR_QOS])
        for i in range(n):
            stamp = T0 + i * 100_000_000
            writer.write("/cam/image_raw", stamp,
                         bm.image(pattern(i, *size), bm.header(stamp, "cam")))
    return path


def storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


def share_json(msgtype: str) -> Path:
    """The rosidl-generated type description of the installed ROS 2 message package."""
    pkg, _, name = msgtype.split("/")
    return Path(sys.prefix) / "share" / pkg / "msg" / f"{name}.json"


@pytest.mark.parametrize("storage", STORAGES)
def test_written_bag_is_standard_rosbag2(tmp_path: Path, storage: str) -> None:
    bag = write_frames(tmp_path / "drive", 5, storage)
    assert sorted(p.name for p in bag.iterdir()) == sorted(["metadata.yaml",
                                                             f"drive{SUFFIX[storage]}"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp dir left"
    info = YAML(typ="safe").load((bag / "metadata.yaml").read_text())
    info = info["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["storage_identifier"] == storage
    assert info["relative_file_paths"] == [f"drive{SUFFIX[storage]}"]
    assert info["message_count"] == 5 and info["custom_data"] == {"k": "v"}
    (topic,) = info["topics_with_message_count"]
    meta = topic["topic_metadata"]
    assert (meta["name"], meta["type"], meta["serialization_format"]) == \
        ("/cam/image_raw", "sensor_msgs/msg/Image", "cdr")
    assert meta["offered_qos_profiles"][0]["reliability"] in ("best_effort", 2)
    if share_json(bm.IMAGE).is_file():  # the hash ROS 2 itself computes for the type
        hashes = json.loads(share_json(bm.IMAGE).read_text())["type_hashes"]
        assert meta["type_description_hash"] == hashes[0]["hash_string"]
    assert meta["type_description_hash"].startswith("RIHS01_")
    # An independent reader, then the real ROS 2 type support, decode every message.
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    with Reader(bag) as reader:
        msgs = list(reader.messages())
        assert reader.connections[0].msgdef.data  # message definition stored for players
    assert [ts for _, ts, _ in msgs] == [T0 + i * 100_000_000 for i in range(5)]
    for i, (_, ts, raw) in enumerate(msgs):
        img = deserialize_message(bytes(raw), Image)
        assert (img.header.stamp.sec * 10**9 + img.header.stamp.nanosec, img.encoding) == \
            (ts, "rgb8")
        assert img.header.frame_id == "cam"
        pixels = np.frombuffer(bytes(img.data), np.uint8).reshape(img.height, img.width, 3)
        np.testing.assert_array_equal(pixels, pattern(i))


@pytest.mark.parametrize("storage", STORAGES)
def test_reads_bag_written_by_rosbags(tmp_path: Path, storage: str) -> None:
    """A bag written with rosbags' own Writer (as other tools would) reads back."""
    import cv2

    store = bm.typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(tmp_path / "other", version=8, storage_plugin=plugin) as writer:
        raw = writer.add_connection("/front/image_raw", bm.IMAGE, typestore=store)
        comp = writer.add_connection("/front/image_raw/compressed", bm.COMPRESSED,
                                     typestore=store)
        for i in range(3):
            hdr = bm.header(T0 + i, "front")
            bgr = np.ascontiguousarray(pattern(i)[:, :, ::-1])
            msg = store.types[bm.IMAGE](header=hdr, height=120, width=160, encoding="bgr8",
                                        is_bigendian=0, step=160 * 3 + 8,
                                        data=np.pad(bgr.reshape(120, -1),
                                                    ((0, 0), (0, 8))).reshape(-1))
            writer.write(raw, T0 + i, store.serialize_cdr(msg, bm.IMAGE))
            ok, png = cv2.imencode(".png", bgr)
            cmsg = store.types[bm.COMPRESSED](header=hdr, format="png", data=png.reshape(-1))
            writer.write(comp, T0 + i, store.serialize_cdr(cmsg, bm.COMPRESSED))
    with BagReader(tmp_path / "other") as reader:
        assert reader.storage == storage and reader.damage is None
        assert {t: i.msgtype for t, i in reader.topics.items()} == {
            "/front/image_raw": bm.IMAGE, "/front/image_raw/compressed": bm.COMPRESSED}
        with pytest.raises(SSNetError, match="2 image topics"):
            image_topic(reader, None)
        for topic in reader.topics:
            msgs = list(reader.messages([topic]))
            assert len(msgs) == 3
            for i, m in enumerate(msgs):
                decoded = bm.deserialize(m.data, m.msgtype)
                np.testing.assert_array_equal(bm.to_rgb(decoded), pattern(i))
                assert bm.stamp_ns(decoded.header) == T0 + i


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_bag_reads_frames_before_damage(tmp_path: Path, storage: str) -> None:
    bag = write_frames(tmp_path / "cut", 40, storage)  # 57 kB frames: several MCAP chunks
    data = storage_file(bag).read_bytes()
    storage_file(bag).write_bytes(data[:len(data) * 6 // 10])
    with BagReader(bag) as reader:
        msgs = list(reader.messages(["/cam/image_raw"]))
        assert reader.damage is not None and storage_file(bag).name in reader.damage
    assert 5 <= len(msgs) < 40
    for i, m in enumerate(msgs):  # a prefix of the recording, intact
        decoded = bm.deserialize(m.data, m.msgtype)
        assert bm.stamp_ns(decoded.header) == T0 + i * 100_000_000
        np.testing.assert_array_equal(bm.to_rgb(decoded), pattern(i))


def test_bag_without_metadata_reads_its_storage_file(tmp_path: Path) -> None:
    bag = write_frames(tmp_path / "nometa", 3, "mcap")
    (bag / "metadata.yaml").unlink()
    with BagReader(bag) as reader:
        assert len(list(reader.messages(["/cam/image_raw"]))) == 3
        assert reader.damage is None and "metadata" in reader.notes[0]
    with BagReader(storage_file(bag)) as reader:  # a lone .mcap file is a bag too
        assert reader.name == "nometa" and reader.topics["/cam/image_raw"].count == 3


def test_unreadable_bags_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SSNetError, match=r"bag .*missing does not exist"):
        BagReader(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SSNetError, match=r"bag .*empty cannot be read: .*metadata"):
        BagReader(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "junk_0.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(SSNetError, match=r"bag .*junk cannot be read: .*MCAP"):
        BagReader(junk)
    bag = write_frames(tmp_path / "ok", 2, "mcap")
    with BagReader(bag) as reader, pytest.raises(SSNetError, match="no topic /nope"):
        list(reader.messages(["/nope"]))


def test_writer_is_atomic_and_never_overwrites_silently(tmp_path: Path) -> None:
    bag = write_frames(tmp_path / "out", 2, "mcap")
    with pytest.raises(SSNetError, match="exists; pass --overwrite"):
        BagWriter(bag)
    with pytest.raises(RuntimeError):
        with BagWriter(bag, overwrite=True) as writer:
            writer.add_topic("/x", bm.IMAGE)
            raise RuntimeError("fails half way")
    assert BagReader(bag).topics["/cam/image_raw"].count == 2  # the old bag is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial left
    write_frames_over = BagWriter(bag, overwrite=True, storage="sqlite3")
    with write_frames_over as writer:
        writer.add_topic("/y", bm.IMAGE, [qos(True, 2)])
    assert set(BagReader(bag).topics) == {"/y"}
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(SSNetError, match="not a rosbag2 directory"):
        BagWriter(precious, overwrite=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    with pytest.raises(SSNetError, match="is a file, not a rosbag2 directory"):
        BagWriter(notes, overwrite=True)
    assert notes.read_text() == "keep"


def test_partials_of_killed_writers_are_removed_on_the_next_run(tmp_path: Path) -> None:
    import subprocess

    dead = subprocess.run(["true"]).returncode == 0 and 2**22 + 12345  # no such process
    stale = tmp_path / f".out.partial-{dead}-deadbeef"
    (stale / "out").mkdir(parents=True)
    alive = tmp_path / f".out.partial-{os.getppid()}-cafef00d"  # a live writer's: kept
    alive.mkdir()
    write_frames(tmp_path / "out", 1, "mcap")
    assert not stale.exists() and alive.exists()


def test_unwritable_output_is_one_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SSNetError, match="cannot write output .*file/out"):
        with BagWriter(blocker / "out"):
            pass


def test_stamp_read_and_patched_in_cdr() -> None:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    raw = bm.serialize(bm.image(pattern(1, 4, 6), bm.header(T0 + 123, "cam")))
    assert bm.cdr_stamp(raw) == divmod(T0 + 123, 10**9)
    patched = bm.with_stamp(raw, 42 * 10**9 + 7)
    msg = deserialize_message(patched, Image)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == \
        (42, 7, "cam")
    assert patched[12:] == bytes(raw)[12:]


def test_labels_validation() -> None:
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = bm.image(labels, bm.header(0, "cam"))
    np.testing.assert_array_equal(bm.to_labels(msg), labels)
    with pytest.raises(SSNetError, match="mono8"):
        bm.to_labels(bm.image(pattern(0, 3, 4), bm.header(0, "cam")))
    short = bm.typestore().types[bm.IMAGE](header=bm.header(0, "c"), height=3, width=4,
                                           encoding="mono8", is_bigendian=0, step=4,
                                           data=np.zeros(5, np.uint8))
    with pytest.raises(SSNetError, match="bytes"):
        bm.to_labels(short)


def test_natural_order() -> None:
    names = ["f10.png", "f9.png", "0006R0_f00930.png", "0001TP_006720.png", "0001TP_006690.png",
             "Seq05VD_f00000.png"]
    assert sorted(names, key=natural_key) == [
        "0001TP_006690.png", "0001TP_006720.png", "0006R0_f00930.png", "f9.png", "f10.png",
        "Seq05VD_f00000.png"]


def test_copied_bag_dir_reads_the_same(tmp_path: Path) -> None:
    bag = write_frames(tmp_path / "a", 2, "sqlite3")
    shutil.copytree(bag, tmp_path / "b")
    with BagReader(tmp_path / "b") as reader:
        assert reader.name == "b" and len(list(reader.messages(["/cam/image_raw"]))) == 2
