"""TFRecord files without TensorFlow: each record is its length (uint64, little-endian), the masked CRC32C
of those 8 bytes, the data, and the masked CRC32C of the data (`tensorflow/core/lib/io/record_writer.cc`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

_MASK_DELTA = 0xA282EAD8


def _table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TF's `crc32c::Mask`: rotate right by 15 bits, add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def encode_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def write_records(path: Path, records: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for data in records:
            out.write(encode_record(data))


class CorruptRecordError(ValueError):
    pass


def read_records(path: Path) -> Iterator[bytes]:
    """The records of a TFRecord file, every CRC checked."""
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 12]
        if len(header) < 12:
            raise CorruptRecordError(f"{path}: truncated record header at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        if struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            raise CorruptRecordError(f"{path}: corrupted record length at byte {offset}")
        end = offset + 12 + length
        body, footer = data[offset + 12 : end], data[end : end + 4]
        if len(body) < length or len(footer) < 4:
            raise CorruptRecordError(f"{path}: truncated record at byte {offset}")
        if struct.unpack("<I", footer)[0] != masked_crc32c(body):
            raise CorruptRecordError(f"{path}: corrupted record data at byte {offset}")
        yield body
        offset = end + 4
