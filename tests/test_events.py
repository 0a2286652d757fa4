"""Event data through tonic (annsnn.events): a tiny N-MNIST-format recording written here,
read by tonic's real reader (tonic.io.read_mnist_file) and binned by tonic's ToFrame;
offline (the real N-MNIST is not on these machines)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

pytest.importorskip("tonic")

from annsnn.errors import UsageError
from annsnn.events import ann_view, event_spec, load_event_dataset, parse_event_name


def _nmnist_bytes(events: list[tuple[int, int, int, int]]) -> bytes:
    """N-MNIST's 40-bit event: x (8), y (8), polarity (1) and a 23-bit timestamp in µs."""
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


# (x, y, t µs, polarity); sample duration 0..299 µs, T = 3 bins of 100 µs
SAMPLE = [(0, 0, 0, 1), (1, 0, 10, 0), (0, 0, 50, 1), (5, 7, 120, 1), (33, 33, 299, 0)]


def _tree(root, n_files: int = 10000) -> None:
    """tonic's NMNIST layout: root/NMNIST/{Test,Train}/<label>/*.bin and the archive
    (tonic checks that the zip exists and that >= 10,000 .bin files were extracted)."""
    base = root / "NMNIST"
    base.mkdir()
    (base / "test.zip").write_bytes(b"")
    first = base / "Test" / "3"
    first.mkdir(parents=True)
    source = first / "00000.bin"
    source.write_bytes(_nmnist_bytes(SAMPLE))
    (base / "Test" / "5").mkdir()
    for i in range(1, n_files):  # hard links: the same recording under label 5
        os.link(source, base / "Test" / "5" / f"{i:05d}.bin")


def test_nmnist_file_binned_into_frames(tmp_path):
    _tree(tmp_path)
    frames = load_event_dataset("tonic:NMNIST:3", "test", tmp_path, view="frames")
    assert len(frames) == 10000
    x, y = frames[0]
    assert y == 3
    assert x.shape == (3, 2, 34, 34)  # [T, P, H, W]
    # tonic's bins: width w = (t_last - t_first) // T = 99 µs, bin = (t - t_first) // w,
    # left-closed; an event at or after T*w (here t = 299) falls in no bin
    expected = torch.zeros(3, 2, 34, 34)
    for xx, yy, t, p in SAMPLE:
        if t // 99 < 3:
            expected[t // 99, p, yy, xx] += 1
    assert expected.sum() == 4
    assert torch.equal(x, expected)
    mean, y5 = load_event_dataset("tonic:NMNIST:3", "test", tmp_path, view="mean")[1]
    assert y5 == 5 and torch.equal(mean, expected.mean(0))
    assert torch.equal(ann_view(x.unsqueeze(0))[0], expected.mean(0))


def test_names_spec_and_errors(tmp_path):
    assert parse_event_name("tonic:NMNIST").frames == 10
    assert parse_event_name("tonic:NMNIST:7").frames == 7
    spec = event_spec("tonic:NMNIST")
    assert spec.input_shape == (2, 34, 34) and spec.num_classes == 10
    with pytest.raises(UsageError, match="unknown tonic dataset"):
        event_spec("tonic:NoSuchSet")
    with pytest.raises(UsageError, match="frame count"):
        parse_event_name("tonic:NMNIST:0")
    with pytest.raises(UsageError, match="--download"):  # missing data: an error, never a download
        load_event_dataset("tonic:NMNIST", "test", tmp_path)
