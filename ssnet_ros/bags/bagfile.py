"""Reading and writing rosbag2 (sqlite3 and mcap storage) with the pure-Python ``rosbags``.

:class:`BagReader` reads a bag directory (or a lone ``.mcap`` / ``.db3`` file). When a bag is
damaged (a recording cut off: no MCAP footer, a truncated sqlite database, a missing
metadata.yaml) it reads every message before the damage and says what is wrong in
:attr:`BagReader.damage` instead of failing.

:class:`BagWriter` writes a bag that ``ros2 bag play``, Foxglove and RViz accept: rosbag2
metadata version 9 (Jazzy), CDR, ``pkg/msg/Type`` names, message definitions and RIHS01 type
hashes. It writes under a temporary name beside the target and renames the bag into place
only when it is complete.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import apsw
from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness, QosReliability,
                                QosTime)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.metadata import parse_qos
from rosbags.rosbag2.storage_mcap import decompress, get_qos
from ruamel.yaml import YAML

from .messages import IMAGE_TYPES, serialize, typestore
from ..errors import SSNetError

STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 9
"""rosbag2 metadata version written (the one ROS 2 Jazzy writes)."""
TRUTH_TOPIC_KEY = "ssnet_ros.truth_topic"
"""Bag custom_data key: the ground-truth topic of a bag made by ssnet-make-bag."""
_SUFFIX = {"mcap": ".mcap", "sqlite3": ".db3"}
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_ZERO = QosTime(0, 0)


def qos(reliable: bool, depth: int) -> Qos:
    """An offered QoS profile for a bag topic (keep last ``depth``, volatile)."""
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.VOLATILE, _ZERO, _ZERO, QosLiveliness.AUTOMATIC, _ZERO, False)


SENSOR_QOS = qos(False, 1)
"""Camera-style QoS: best effort, newest only."""


def natural_key(text: str) -> tuple[Any, ...]:
    """Sort key comparing digit runs as numbers: frame_9 < frame_10, 0001TP_006690 in order."""
    return tuple(int(part) if part.isdigit() else part.lower()
                 for part in re.split(r"(\d+)", text))


@dataclass(frozen=True)
class TopicInfo:
    """A topic of a bag."""

    name: str
    msgtype: str
    count: int | None
    """Messages on the topic as the bag's index says (None when unknown)."""
    qos: tuple[Qos, ...] = ()


@dataclass(frozen=True)
class RawMessage:
    """One serialized message as stored in the bag."""

    topic: str
    msgtype: str
    timestamp: int
    """Bag (receive) time in nanoseconds."""
    data: bytes | memoryview


class _Damage(Exception):
    """Reading a storage file stopped at damage (message: what is wrong)."""


@dataclass
class _Channel:
    topic: str
    msgtype: str
    qos: tuple[Qos, ...]


@dataclass
class _Scan:
    """State of a salvage scan of one storage file."""

    channels: dict[int, _Channel] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class BagReader:
    """Reads one rosbag2: a bag directory, or a lone ``.mcap`` / ``.db3`` storage file.

    Raises :class:`SSNetError` naming the bag when nothing in it can be read. A bag that is
    readable up to some point opens normally; :meth:`messages` then stops at the damage and
    :attr:`damage` says what is wrong.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = self.path.stem if self.path.is_file() else self.path.name
        self.damage: str | None = None
        """What is wrong with the bag, once damage was met (None: none so far)."""
        self.notes: list[str] = []
        """Problems that lost no message (e.g. a missing metadata.yaml)."""
        self.custom: dict[str, str] = {}
        self.topics: dict[str, TopicInfo] = {}
        self.storage = ""
        self._files: list[Path] = []
        self._reader: Reader | None = None
        if not self.path.exists():
            raise SSNetError(f"bag {self.path} does not exist")
        try:
            self._open_with_rosbags()
        except SSNetError:
            self._close_reader()
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: try to salvage the files
            self._close_reader()
            self._open_salvage(_reason(exc))

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the storage files."""
        self._close_reader()

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader.is_open:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a broken reader may fail; nothing to do
                pass

    # -- opening ------------------------------------------------------------------------------

    def _open_with_rosbags(self) -> None:
        reader = Reader(self.path)
        reader.open()
        self._reader = reader
        meta = getattr(reader.storage, "metadata", None)
        self.custom = dict(getattr(meta, "custom", None) or {})
        inner = reader.storage
        paths = [s.path for s in getattr(inner, "storages", [])] or [getattr(inner, "path", "")]
        self.storage = _storage_of(Path(str(paths[0])))
        for name, info in reader.topics.items():
            if info.msgtype is None:
                raise SSNetError(f"topic {name} of bag {self.path} carries several message "
                                 f"types")
            qos_profiles = info.connections[0].ext.offered_qos_profiles \
                if info.connections else []
            self.topics[name] = TopicInfo(name, info.msgtype, info.msgcount,
                                          tuple(qos_profiles))

    def _open_salvage(self, why: str) -> None:
        self._files = self._storage_files()
        if not self._files:
            raise SSNetError(f"bag {self.path} cannot be read: {why}")
        self.storage = _storage_of(self._files[0])
        scan = _Scan()
        problem = None
        try:
            for path in self._files:
                for _ in _salvage(path, scan, want=None):
                    pass
        except _Damage as exc:
            problem = str(exc)
        if not scan.channels:
            raise SSNetError(f"bag {self.path} cannot be read: {problem or why}")
        for channel in scan.channels.values():
            self.topics.setdefault(channel.topic, TopicInfo(
                channel.topic, channel.msgtype, scan.counts.get(channel.topic, 0),
                channel.qos))
        total = sum(scan.counts.values())
        if problem:
            self.damage = f"{problem}; {total} messages before the damage are readable"
        elif (self.path / "metadata.yaml").is_file():  # there, but unreadable: damage
            self.damage = (f"its metadata.yaml is unreadable ({why}); the {total} messages of "
                           f"its storage files were read directly")
        else:
            self.notes.append(f"{why}; read the {total} messages of its storage files directly")

    def _storage_files(self) -> list[Path]:
        if self.path.is_file():
            return [self.path] if self.path.suffix in _SUFFIX.values() else []
        listed: list[Path] = []
        try:
            meta = YAML(typ="safe").load((self.path / "metadata.yaml").read_text())
            listed = [self.path / Path(p).name for p in
                      meta["rosbag2_bagfile_information"]["relative_file_paths"]]
        except Exception:  # noqa: BLE001 - no usable metadata: take the files present
            pass
        present = [p for p in listed if p.is_file()]
        if present:
            return present
        found = [p for p in self.path.iterdir() if p.suffix in _SUFFIX.values()]
        return sorted(found, key=lambda p: natural_key(p.name))

    # -- reading ------------------------------------------------------------------------------

    def messages(self, topics: Collection[str]) -> Iterator[RawMessage]:
        """Messages on ``topics`` in bag order; stops (setting :attr:`damage`) at damage."""
        unknown = [t for t in topics if t not in self.topics]
        if unknown:
            raise SSNetError(f"bag {self.path} has no topic {unknown[0]} (topics: "
                             f"{', '.join(sorted(self.topics)) or 'none'})")
        seen = dict.fromkeys(topics, 0)
        if self._reader is None:
            yield from self._salvage_messages(set(topics))
            return
        connections = [c for c in self._reader.connections if c.topic in seen]
        try:
            for conn, timestamp, data in self._reader.messages(connections):
                seen[conn.topic] += 1
                yield RawMessage(conn.topic, conn.msgtype, timestamp, data)
        except Exception as exc:  # noqa: BLE001 - a damaged storage file
            done = sum(seen.values())
            self._set_damage(f"{_reason(exc)}; read the {done} messages before the damage")
            return
        for topic, n in seen.items():
            expected = self.topics[topic].count
            if expected is not None and n < expected:
                self._set_damage(f"its index lists {expected} messages on {topic} but only "
                                 f"{n} could be read")

    def _salvage_messages(self, topics: set[str]) -> Iterator[RawMessage]:
        scan = _Scan()
        try:
            for path in self._files:
                yield from _salvage(path, scan, want=topics)
        except _Damage:
            pass  # self.damage was set when the bag was opened

    def _set_damage(self, text: str) -> None:
        if self.damage is None:
            self.damage = text


def image_topic(reader: BagReader, topic: str | None, exclude: Sequence[str] = ()) -> str:
    """``topic`` checked to be an image topic of the bag, or the bag's only camera topic
    (image topics besides ``exclude``, its recorded ground truth and segmentation outputs)."""
    skip = {*exclude, reader.custom.get(TRUTH_TOPIC_KEY)}
    images = sorted(t for t, info in reader.topics.items() if info.msgtype in IMAGE_TYPES
                    and t not in skip and "/segmentation/" not in f"{t}/")
    if topic is None:
        if len(images) != 1:
            raise SSNetError(f"bag {reader.path} has {len(images)} image topics "
                             f"({', '.join(images) or 'none'}); choose one with --topic")
        return images[0]
    if topic not in reader.topics:
        raise SSNetError(f"bag {reader.path} has no topic {topic} (image topics: "
                         f"{', '.join(images) or 'none'})")
    if reader.topics[topic].msgtype not in IMAGE_TYPES:
        raise SSNetError(f"topic {topic} of bag {reader.path} carries "
                         f"{reader.topics[topic].msgtype}, not an Image or CompressedImage")
    return topic


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.rstrip(".")


def _storage_of(path: Path) -> str:
    return "sqlite3" if path.suffix == ".db3" else "mcap"


# -- salvage readers: sequential scans that stop at the first damage ---------------------------

def _salvage(path: Path, scan: _Scan, want: set[str] | None) -> Iterator[RawMessage]:
    """Messages of one storage file in file order (``want`` None: only count them)."""
    if path.suffix == ".db3":
        yield from _salvage_sqlite(path, scan, want)
    else:
        with path.open("rb") as bio:
            yield from _salvage_mcap(path, bio, scan, want)


def _salvage_sqlite(path: Path, scan: _Scan, want: set[str] | None) -> Iterator[RawMessage]:
    try:
        db, vfs = _open_padded_sqlite(path)
    except (apsw.Error, OSError) as exc:
        raise _Damage(f"{path.name} cannot be opened as a database ({_reason(exc)})") from None
    try:
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(topics)")}
            qos_col = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
            for tid, name, msgtype, qos_text in db.execute(
                    f"SELECT id, name, type, {qos_col} FROM topics"):
                try:
                    profiles = tuple(parse_qos(qos_text or []))
                except Exception:  # noqa: BLE001 - QoS is informative only
                    profiles = ()
                scan.channels[tid] = _Channel(name, msgtype, profiles)
        except apsw.Error as exc:
            raise _Damage(f"{path.name}: its topics table cannot be read "
                          f"({_reason(exc)})") from None
        ids = [tid for tid, ch in scan.channels.items() if want is None or ch.topic in want]
        if not ids:
            return
        query = ("SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN "
                 f"({','.join('?' * len(ids))}) ORDER BY id")
        try:
            for tid, timestamp, data in db.execute(query, ids):
                channel = scan.channels[tid]
                scan.counts[channel.topic] = scan.counts.get(channel.topic, 0) + 1
                if want is not None:
                    yield RawMessage(channel.topic, channel.msgtype, timestamp, data)
        except apsw.Error as exc:
            raise _Damage(f"{path.name} is damaged ({_reason(exc)})") from None
    finally:
        db.close()
        vfs.unregister()


def _open_padded_sqlite(path: Path) -> tuple[apsw.Connection, apsw.VFS]:
    """Open a possibly truncated sqlite file read-only, as if zero-filled to its full size.

    SQLite refuses a database shorter than its header says; reading the missing pages as zeros
    lets every intact page be read, and queries fail only when they reach a missing page.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\0"):
        raise OSError(f"{path.name} is not an sqlite3 database")
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page or 4096
    padded = max(-(-size // page) * page, int.from_bytes(head[28:32], "big") * page)

    class File(apsw.VFSFile):
        def __init__(self) -> None:  # no base file: every call used is implemented here
            self.bio = path.open("rb")

        def xRead(self, amount: int, offset: int) -> bytes:  # noqa: N802 - apsw names
            self.bio.seek(offset)
            data = self.bio.read(amount)
            return data + bytes(amount - len(data))

        def xFileSize(self) -> int:  # noqa: N802
            return padded

        def xClose(self) -> None:  # noqa: N802
            self.bio.close()

        def xDeviceCharacteristics(self) -> int:  # noqa: N802
            return 0

        def xSectorSize(self) -> int:  # noqa: N802
            return 0

        def xFileControl(self, op: int, ptr: int) -> bool:  # noqa: N802
            return False

    class VFS(apsw.VFS):
        def xOpen(self, name: Any, flags: list[int]) -> apsw.VFSFile:  # noqa: N802
            return File()

    name = f"ssnet-salvage-{uuid.uuid4().hex[:8]}"
    vfs = VFS(name, "")
    try:
        db = apsw.Connection(f"file:{path}?immutable=1", vfs=name,
                             flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    except BaseException:
        vfs.unregister()
        raise
    return db, vfs


_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


class _Buf:
    """A cursor over bytes that raises _Damage on short reads."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise _Damage(f"{self.where} has a record cut short")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def string(self) -> str:
        return self.take(self.u32()).decode("utf-8", "replace")

    def done(self) -> bool:
        return self.pos >= len(self.data)


def _salvage_mcap(path: Path, bio: BinaryIO, scan: _Scan, want: set[str] | None
                  ) -> Iterator[RawMessage]:
    if bio.read(8) != _MCAP_MAGIC:
        raise _Damage(f"{path.name} does not start like an MCAP file")
    size = path.stat().st_size
    schemas: dict[int, str] = {}
    while True:
        start = bio.tell()
        head = bio.read(9)
        if len(head) < 9:
            raise _Damage(f"{path.name} ends at byte {start} of {size} without the MCAP footer "
                          f"(the recording was cut off)")
        op, length = head[0], _U64.unpack(head[1:])[0]
        if op in (0x02, 0x0F):  # footer or data end: the data section is complete
            return
        if op not in (0x03, 0x04, 0x05, 0x06):
            if start + 9 + length > size:
                raise _Damage(f"{path.name} is cut off inside a record at byte {start}")
            bio.seek(length, 1)
            continue
        body = bio.read(length)
        if len(body) < length:
            raise _Damage(f"{path.name} is cut off inside a record at byte {start} of {size} "
                          f"(the recording was cut off)")
        if op == 0x06:
            rec = _Buf(body, path.name)
            rec.take(16)
            raw_size, crc = rec.u64(), rec.u32()
            compression = rec.string()
            payload = rec.take(rec.u64())
            try:
                chunk = decompress(payload, compression, raw_size, crc)
            except Exception as exc:  # noqa: BLE001
                raise _Damage(f"{path.name} has a damaged chunk at byte {start} "
                              f"({_reason(exc)})") from None
            inner = _Buf(chunk, path.name)
            while not inner.done():
                iop, ilen = inner.take(1)[0], inner.u64()
                yield from _mcap_record(iop, _Buf(inner.take(ilen), path.name), schemas, scan,
                                        want)
        else:
            yield from _mcap_record(op, _Buf(body, path.name), schemas, scan, want)


def _mcap_record(op: int, rec: _Buf, schemas: dict[int, str], scan: _Scan,
                 want: set[str] | None) -> Iterator[RawMessage]:
    if op == 0x03:
        sid = rec.u16()
        schemas[sid] = rec.string()
    elif op == 0x04:
        cid, sid = rec.u16(), rec.u16()
        topic, _encoding = rec.string(), rec.string()
        metadata = rec.take(rec.u32())
        try:
            profiles = tuple(get_qos(metadata))
        except Exception:  # noqa: BLE001 - QoS is informative only
            profiles = ()
        scan.channels[cid] = _Channel(topic, schemas.get(sid, ""), profiles)
    elif op == 0x05:
        cid = rec.u16()
        rec.take(4)
        log_time = rec.u64()
        rec.take(8)
        channel = scan.channels.get(cid)
        if channel is None:
            return
        scan.counts[channel.topic] = scan.counts.get(channel.topic, 0) + 1
        if want is not None and channel.topic in want:
            yield RawMessage(channel.topic, channel.msgtype, log_time, rec.data[rec.pos:])



# -- writing ---------------------------------------------------------------------------------

def check_output(path: Path, overwrite: bool) -> None:
    """Raise SSNetError unless ``path`` may become a new bag: free, or (with ``overwrite``)
    a rosbag2 directory or an empty directory. Files, links and other folders are never
    replaced: ``--overwrite`` replaces only what a bag tool wrote."""
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise SSNetError(f"output {path} exists; pass --overwrite to replace it")
    if path.is_symlink() or not path.is_dir():
        raise SSNetError(f"output {path} exists and is a file, not a rosbag2 directory; not "
                         f"replacing it even with --overwrite")
    if any(path.iterdir()) and not (path / "metadata.yaml").is_file():
        raise SSNetError(f"output {path} exists and is not a rosbag2 directory; not replacing "
                         f"it even with --overwrite")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(path: Path) -> list[Path]:
    """Delete ``.NAME.partial-PID-*`` / ``.NAME.old-PID-*`` leftovers of ``path`` whose
    writing process is gone (a killed tool); return what was removed."""
    removed = []
    for kind in ("partial", "old"):
        for stale in path.parent.glob(f".{path.name}.{kind}-*"):
            pid = stale.name.rsplit(f".{kind}-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and (int(pid) == os.getpid() or _pid_alive(int(pid))):
                continue
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink()
            removed.append(stale)
    return removed


class BagWriter:
    """Writes a new rosbag2 directory at ``path``, atomically.

    Use as a context manager: the bag is written to ``.<name>.partial-*/<name>`` beside
    ``path`` and renamed onto ``path`` when the block ends without an exception (on an
    exception the partial bag is deleted). An existing ``path`` is refused unless
    ``overwrite`` (and even then only when it is a bag or empty).
    """

    def __init__(self, path: str | Path, *, storage: str = "mcap", overwrite: bool = False,
                 custom: Mapping[str, str] | None = None) -> None:
        if storage not in STORAGES:
            raise SSNetError(f"storage {storage!r} is not one of {', '.join(STORAGES)}")
        self.path = Path(path)
        self.storage = storage
        self.overwrite = overwrite
        self.custom = dict(custom or {})
        self.counts: dict[str, int] = {}
        check_output(self.path, overwrite)
        self._tmp: Path | None = None
        self._writer: Writer | None = None
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_partials(self.path)
            self._tmp = self.path.parent / (f".{self.path.name}.partial-{os.getpid()}-"
                                            f"{uuid.uuid4().hex[:8]}")
            self._tmp.mkdir()
        except OSError as exc:
            raise SSNetError(f"cannot write output {self.path}: "
                             f"{exc.strerror or exc}") from None
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self._tmp / self.path.name, version=BAG_VERSION,
                              storage_plugin=plugin)
        for key, value in self.custom.items():
            self._writer.set_custom_data(key, value)
        self._writer.open()
        return self

    def add_topic(self, topic: str, msgtype: str, qos_profiles: Sequence[Qos] = ()) -> None:
        """Declare ``topic`` (a full name, e.g. /camera/image_raw) of type ``msgtype``."""
        assert self._writer is not None, "use BagWriter as a context manager"
        if topic in self._connections:
            raise SSNetError(f"topic {topic} is added twice to {self.path}")
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=typestore(), serialization_format="cdr",
            offered_qos_profiles=list(qos_profiles))
        self.counts[topic] = 0

    def write_raw(self, topic: str, timestamp: int, data: bytes | memoryview) -> None:
        """Store serialized (CDR) ``data`` on ``topic`` at bag time ``timestamp`` (ns)."""
        assert self._writer is not None
        self._writer.write(self._connections[topic], int(timestamp), data)
        self.counts[topic] += 1

    def write(self, topic: str, timestamp: int, msg: Any) -> None:
        """Serialize a rosbags message dataclass and store it."""
        self.write_raw(topic, timestamp, serialize(msg))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._writer is not None and self._tmp is not None
        writer, tmp = self._writer, self._tmp
        self._writer = self._tmp = None
        try:
            if exc_type is not None:
                writer.abort()
                return
            writer.close()
            check_output(self.path, self.overwrite)
            old = None
            if self.path.exists() or self.path.is_symlink():
                old = self.path.parent / (f".{self.path.name}.old-{os.getpid()}-"
                                          f"{uuid.uuid4().hex[:8]}")
                os.replace(self.path, old)
            os.replace(tmp / self.path.name, self.path)
            if old is not None:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
