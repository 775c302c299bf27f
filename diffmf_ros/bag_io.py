"""ROS 2 bags in and out with ``rosbags``: no ROS install needed, sqlite3 and mcap alike.

Everything that can go wrong with a bag becomes a :class:`BagError` subclass whose message
names the bag and the problem in one line, so the command-line tools can print it and
exit. :class:`BagWriter` is closed properly on every path (never aborted), so a run that
stops half-way still leaves a bag that opens and holds what was written before the stop.

Message building and decoding for the image types lives here too, on top of
:mod:`diffmf_ros.image_conversion` (the node's own converter).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Connection, ConnectionExtRosbag2
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from .image_conversion import compressed_to_numpy, encode_compressed, image_to_numpy, numpy_to_image_fields

__all__ = [
    "COMPRESSED",
    "IMAGE",
    "IMAGE_TYPES",
    "STORAGES",
    "BagError",
    "BagOpenError",
    "BagReadError",
    "BagReader",
    "BagTopicError",
    "BagWriteError",
    "BagWriter",
    "build_compressed",
    "build_image",
    "decode_image",
    "detect_storage",
    "header_stamp_ns",
    "typestore",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE, COMPRESSED)
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
# Metadata version 8 keeps QoS profiles as a YAML string, which every rosbag2 from Humble on reads.
BAG_VERSION = 8
NS_PER_S = 1_000_000_000


class BagError(Exception):
    """A bag that cannot be used; ``str()`` is one line: ``<bag>: <problem>``."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = Path(path)
        self.problem = " ".join(str(problem).split())  # one line, whatever the library said
        super().__init__(f"{self.path}: {self.problem}")


class BagOpenError(BagError):
    """The bag does not exist, is not a rosbag2, or is truncated/corrupt where its index lives."""


class BagTopicError(BagError):
    """A requested topic is missing from the bag or carries a type that cannot be used."""


class BagReadError(BagError):
    """Reading failed part-way (corrupt chunk, truncated message)."""


class BagWriteError(BagError):
    """The output bag cannot be created or written."""


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Message types of ROS 2 Humble; sensor_msgs images are identical in every later distro."""
    return get_typestore(Stores.ROS2_HUMBLE)


def detect_storage(path: str | os.PathLike) -> str:
    """``sqlite3`` or ``mcap`` for a bag directory or a single storage file."""
    path = Path(path)
    names = [path.name] if path.is_file() else [p.name for p in path.iterdir()] if path.is_dir() else []
    if any(".mcap" in name for name in names):
        return "mcap"
    if any(".db3" in name for name in names):
        return "sqlite3"
    raise BagOpenError(path, "holds no .db3 or .mcap storage file")


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str
    count: int
    connection: Connection


class BagReader:
    """An input bag (directory or single .db3/.mcap file), opened as a context manager."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._reader: Reader | None = None

    def __enter__(self) -> BagReader:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if not self.path.exists():
            raise BagOpenError(self.path, "no such bag")
        try:
            self.storage = detect_storage(self.path)
            reader = Reader(self.path)
            reader.open()
        except BagError:
            raise
        except FileNotFoundError as exc:  # a directory without metadata.yaml
            raise BagOpenError(self.path, f"not a rosbag2 bag ({exc})") from None
        except (ReaderError, OSError, ValueError, KeyError, IndexError) as exc:
            raise BagOpenError(self.path, f"cannot open ({_describe(exc)}); is it truncated or corrupt?") from None
        self._reader = reader

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            raise BagOpenError(self.path, "bag is not open")
        return self._reader

    @property
    def start_ns(self) -> int:
        return int(self.reader.start_time)

    @property
    def end_ns(self) -> int:
        return int(self.reader.end_time)

    def topics(self) -> dict[str, TopicInfo]:
        """Every topic with its type and message count (the first connection of each topic)."""
        topics: dict[str, TopicInfo] = {}
        for conn in self.reader.connections:
            if conn.topic in topics:
                info = topics[conn.topic]
                topics[conn.topic] = TopicInfo(info.name, info.msgtype, info.count + conn.msgcount, info.connection)
            else:
                topics[conn.topic] = TopicInfo(conn.topic, conn.msgtype, conn.msgcount, conn)
        return topics

    def connection(self, topic: str, allowed_types: Sequence[str] = IMAGE_TYPES) -> Connection:
        """The connection of ``topic``; BagTopicError if it is missing or not one of ``allowed_types``."""
        topics = self.topics()
        info = topics.get(topic) or topics.get(_other_spelling(topic))
        if info is None:
            usable = [f"{t.name} ({t.msgtype})" for t in topics.values() if t.msgtype in allowed_types]
            listing = ", ".join(usable) if usable else "none"
            raise BagTopicError(self.path, f"topic '{topic}' is not in the bag (usable topics: {listing})")
        if info.msgtype not in allowed_types:
            raise BagTopicError(
                self.path,
                f"topic '{info.name}' has type {info.msgtype}, expected {' or '.join(allowed_types)}",
            )
        return info.connection

    def connections_of(self, topic: str) -> list[Connection]:
        """All connections recorded for ``topic`` (a topic re-advertised mid-recording has several)."""
        return [c for c in self.reader.connections if c.topic == topic]

    def messages(self, connections: Iterable[Connection]) -> Iterator[tuple[Connection, int, bytes]]:
        """``(connection, log time ns, raw CDR)`` in log-time order; failures become BagReadError."""
        connections = list(connections)
        count = 0
        iterator = self.reader.messages(connections=connections)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except (ReaderError, OSError, ValueError, KeyError, IndexError, EOFError) as exc:
                raise BagReadError(
                    self.path, f"read failed after {count} messages ({_describe(exc)}); is it truncated or corrupt?"
                ) from None
            except Exception as exc:  # sqlite3.DatabaseError and friends from the storage layer
                raise BagReadError(self.path, f"read failed after {count} messages ({_describe(exc)})") from None
            count += 1
            conn, timestamp, raw = item
            yield conn, int(timestamp), bytes(raw) if isinstance(raw, memoryview) else raw

    def deserialize(self, raw: bytes, connection: Connection, timestamp: int) -> Any:
        """A rosbags message object; a truncated or garbled message becomes BagReadError."""
        try:
            return typestore().deserialize_cdr(raw, connection.msgtype)
        except Exception as exc:  # the CDR decoder raises assorted errors on short or bad data
            raise BagReadError(
                self.path,
                f"message on '{connection.topic}' at t={timestamp / NS_PER_S:.9f} s is truncated or corrupt"
                f" ({len(raw)} bytes; {_describe(exc)})",
            ) from None


class BagWriter:
    """An output bag. ``close()`` writes the index and metadata; it runs on every exit path."""

    def __init__(self, path: str | os.PathLike, storage: str = "sqlite3") -> None:
        self.path = Path(path)
        if storage not in STORAGES:
            raise BagWriteError(self.path, f"unknown storage '{storage}' (use {' or '.join(STORAGES)})")
        self.storage = storage
        self._writer: Writer | None = None
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if self.path.exists():
            raise BagWriteError(self.path, "already exists; not overwriting (remove it or pick another --output)")
        try:
            writer = Writer(self.path, version=BAG_VERSION, storage_plugin=STORAGES[self.storage])
            writer.open()
        except (WriterError, OSError) as exc:
            raise BagWriteError(self.path, f"cannot create ({_describe(exc)})") from None
        self._writer = writer

    @property
    def writer(self) -> Writer:
        if self._writer is None:
            raise BagWriteError(self.path, "bag is not open")
        return self._writer

    def add_topic(self, topic: str, msgtype: str, like: Connection | None = None) -> Connection:
        """A new connection; ``like`` (a connection of an input bag) passes its definition and QoS on."""
        kwargs: dict[str, Any] = {}
        if like is not None:
            if isinstance(like.ext, ConnectionExtRosbag2):
                kwargs["offered_qos_profiles"] = like.ext.offered_qos_profiles
            if like.msgdef.data and like.digest:
                kwargs.update(msgdef=like.msgdef.data, rihs01=like.digest)
        if "msgdef" not in kwargs:
            kwargs["typestore"] = self._store_knowing(msgtype, like)
        try:
            conn = self.writer.add_connection(topic, msgtype, **kwargs)
        except (WriterError, KeyError, ValueError) as exc:
            raise BagWriteError(self.path, f"cannot add topic '{topic}' ({msgtype}): {_describe(exc)}") from None
        self.counts.setdefault(topic, 0)
        return conn

    def _store_knowing(self, msgtype: str, like: Connection | None) -> Typestore:
        """The shared typestore, or a private one that learned ``msgtype`` from the input bag's definition."""
        store = typestore()
        if msgtype in store.types:
            return store
        if like is None or not like.msgdef.data:
            raise BagWriteError(self.path, f"type {msgtype} is unknown and the input bag carries no definition of it")
        private = get_typestore(Stores.ROS2_HUMBLE)
        private.register(get_types_from_msg(like.msgdef.data, msgtype))
        return private

    def write(self, connection: Connection, timestamp: int, raw: bytes | memoryview) -> None:
        try:
            self.writer.write(connection, int(timestamp), raw)
        except (WriterError, OSError) as exc:
            raise BagWriteError(self.path, f"write to '{connection.topic}' failed ({_describe(exc)})") from None
        self.counts[connection.topic] = self.counts.get(connection.topic, 0) + 1

    def write_message(self, connection: Connection, timestamp: int, message: Any) -> None:
        self.write(connection, timestamp, typestore().serialize_cdr(message, connection.msgtype))

    def close(self) -> None:
        """Finish the bag (index + metadata.yaml) so it opens in rosbags and ros2 bag alike."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            writer.close()
        except (WriterError, OSError) as exc:
            raise BagWriteError(self.path, f"closing failed ({_describe(exc)})") from None


def _other_spelling(topic: str) -> str:
    """``/a/b`` <-> ``a/b``: bags store absolute names, users often type relative ones."""
    return topic[1:] if topic.startswith("/") else "/" + topic


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


# -- image messages ----------------------------------------------------------------------------


def header_stamp_ns(message: Any) -> int:
    stamp = message.header.stamp
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id=frame_id
    )


def build_image(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "") -> Any:
    """A rosbags sensor_msgs/Image holding ``array`` (H x W, or H x W x 3 RGB) in ``encoding``."""
    fields = numpy_to_image_fields(array, encoding)
    return typestore().types[IMAGE](header=_header(stamp_ns, frame_id), **fields)


def build_compressed(array: np.ndarray, fmt: str, stamp_ns: int, frame_id: str = "") -> Any:
    """A rosbags sensor_msgs/CompressedImage (png keeps 16-bit; jpeg is 8-bit only)."""
    fields = encode_compressed(array, fmt)
    return typestore().types[COMPRESSED](header=_header(stamp_ns, frame_id), **fields)


def decode_image(message: Any, msgtype: str, max_pixels: int | None = None) -> np.ndarray:
    """Pixels of an Image or CompressedImage (ImageConversionError, with a ``reason``, if unusable)."""
    if msgtype == COMPRESSED:
        return compressed_to_numpy(message, max_pixels)
    return image_to_numpy(message, max_pixels)
