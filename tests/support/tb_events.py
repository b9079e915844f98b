"""Read TensorBoard event files back (TFRecord framing of protobuf ``Event`` messages, via tensorboardX's
generated protobuf classes), so tests check what a tracker wrote without the tensorboard package."""

from __future__ import annotations

import struct
from pathlib import Path


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``folder`` (recursively): tag -> [(step, value), ...]."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            record = data[offset + 12: offset + 12 + length]
            offset += 12 + length + 4  # length, its CRC, the record, its CRC
            event = Event.FromString(record)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out
