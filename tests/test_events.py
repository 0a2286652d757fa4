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


def _tree(root, n_files: int = 10000, folder: str = "Test") -> None:
    """tonic's NMNIST layout: root/NMNIST/{Test,Train}/<label>/*.bin and the archive
    (tonic checks that the zip exists and that >= 10,000 .bin files were extracted)."""
    base = root / "NMNIST"
    base.mkdir(exist_ok=True)
    (base / f"{folder.lower()}.zip").write_bytes(b"")
    first = base / folder / "3"
    first.mkdir(parents=True)
    source = first / "00000.bin"
    source.write_bytes(_nmnist_bytes(SAMPLE))
    (base / folder / "5").mkdir()
    for i in range(1, n_files):  # hard links: the same recording under label 5
        os.link(source, base / folder / "5" / f"{i:05d}.bin")


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
    assert event_spec("tonic:NMNIST") == ((2, 34, 34), 10)
    from annsnn.data import dataset_spec

    spec = dataset_spec("tonic:NMNIST:5")
    assert spec.input_shape == (2, 34, 34) and spec.num_classes == 10 and spec.mean == (0.0, 0.0)
    with pytest.raises(UsageError, match="unknown tonic dataset"):
        event_spec("tonic:NoSuchSet")
    with pytest.raises(UsageError, match="frame count"):
        parse_event_name("tonic:NMNIST:0")
    with pytest.raises(UsageError, match="--download"):  # missing data: an error, never a download
        load_event_dataset("tonic:NMNIST", "test", tmp_path)


def test_event_input_counts_every_event_as_spikes(tmp_path):
    """A Linear(2*34*34 -> 10) + IF SNN on event frames: SyOPs = events x 10, no MACs; the
    ANN reference sees the mean frame."""
    from spikingjelly.activation_based import neuron

    from annsnn.analyzer import Analyzer
    from annsnn.foreign_snn import from_spikingjelly

    _tree(tmp_path)
    frames = load_event_dataset("tonic:NMNIST:3", "test", tmp_path, view="frames")
    x = torch.stack([frames[0][0], frames[1][0]])  # [B=2, T=3, 2, 34, 34]
    y = torch.tensor([3, 5])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 34 * 34, 10, bias=False), neuron.IFNode(v_threshold=0.01, step_mode="m"))
    snn = from_spikingjelly(net, (2, 34, 34))
    with Analyzer(snn, [1, 2, 3], encoding="events", energy_models=["45nm-fp32"]) as a:
        a.run(x, y)
    result = a.report()
    per_step = x.sum(dim=(2, 3, 4)).sum(0) / 2  # events per step, per sample
    assert per_step.tolist() == [3, 1, 0]
    layers = {layer.name: layer for layer in result.layers}
    assert layers["layer1"].synaptic_acs == pytest.approx(10 * 4)  # every event reaches 10 synapses (T = 3)
    spikes = layers["output"].synaptic_acs  # the readout: one AC per output spike
    for row in result.rows:
        assert row.macs == 0
        assert row.synaptic_acs <= 10 * float(per_step[: row.T].sum()) + spikes
    assert result.rows[-1].synaptic_acs == pytest.approx(40 + spikes)
    assert result.mac_counting == "none (event spikes: ACs)"
    with Analyzer(snn, [4], encoding="events") as a:  # more steps than frames: one clear error
        with pytest.raises(UsageError, match="frames"):
            a.run(x, y)


def test_cli_converted_and_direct_snns_run_on_events(tmp_path, monkeypatch):
    import json

    from annsnn.cli.main import main

    import tonic.datasets

    _tree(tmp_path, 40)
    _tree(tmp_path, 40, folder="Train")
    # tonic takes >= 10,000 extracted files as the sign of a complete download (checked in
    # the first test); here 40 files keep the CLI's epoch and test passes short
    monkeypatch.setattr(tonic.datasets.NMNIST, "_check_exists", lambda self: True)
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path)

    def run(*args):
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        return exc.value.code

    data = ["--data", "tonic:NMNIST:3", "--data-root", root]
    main(["zoo", "train", "nmnist_cnn", *data, "--samples", "64", "--epochs", "1", "--out", "ann.pt"])
    main(["convert", "ann.pt", *data, "--calib-samples", "16", "--calibration", "none", "--out", "ann.snn.pt"])
    main(["energy", "ann.snn.pt", *data, "--encoding", "events", "--T", "1,3", "--samples", "8", "--json", "converted.json"])
    report = json.loads((tmp_path / "converted.json").read_text())
    assert report["encoding"] == "events" and all(r["macs"] == 0 for r in report["rows"])  # events drive the first conv with ACs
    assert report["ann"]["macs"] > 0
    main(["zoo", "train", "nmnist_cnn", *data, "--samples", "64", "--epochs", "1", "--snn", "--T", "3", "--out", "direct.pt"])
    main(["energy", "--model", "direct.pt", *data, "--encoding", "events", "--T", "1,3", "--samples", "8", "--json", "direct.json"])
    report = json.loads((tmp_path / "direct.json").read_text())
    assert report["encoding"] == "events" and all(r["macs"] == 0 for r in report["rows"])
    assert report["rows"][-1]["synaptic_acs"] > report["rows"][0]["synaptic_acs"]
    assert run("energy", "--model", "direct.pt", "--data", "digits", "--encoding", "events", "--T", "3") == 2


def test_every_offered_tonic_dataset_is_one_annsnn_reads_and_the_rest_get_one_line():
    """The 'use one of' list offered 18 tonic classes; 11 were then refused ('names no
    classes') and NCALTECH101 (no fixed sensor size) was an internal TypeError."""
    import re

    with pytest.raises(UsageError) as caught:
        event_spec("tonic:NoSuchSet")
    offered = re.findall(r"\b[A-Z][A-Za-z0-9]+\b", str(caught.value).split("use one of", 1)[1])
    assert {"NMNIST", "DVSGesture", "POKERDVS"} <= set(offered)
    for name in offered:
        shape, classes = event_spec(f"tonic:{name}")  # each offered name is one annsnn reads
        assert len(shape) == 3 and classes >= 2
    for name in ("NCALTECH101", "SHD", "DSEC"):
        with pytest.raises(UsageError, match="not a classification camera dataset"):
            event_spec(f"tonic:{name}")
