"""The nets benchmarks/run.py trains for its rows are the same on every run: the reduced
VGG19 of the suite and NIR rows was built from whatever state the global RNG had, so its
ANN scored 97.22 % in one row and 99.17 % in another of the same regeneration (63f4c97)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench_run():
    spec = importlib.util.spec_from_file_location("annsnn_bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_vgg19_is_the_same_whatever_ran_before():
    bench = _bench_run()
    x = torch.rand(8, 1, 8, 8)
    y = torch.arange(8) % 10
    torch.manual_seed(123)
    first = bench.trained_digits_vgg19(x, y, epochs=1).state_dict()
    torch.rand(1000)  # another consumer of the global generator in between
    second = bench.trained_digits_vgg19(x, y, epochs=1).state_dict()
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_digits_vgg19_leaves_the_callers_generator_alone():
    """Building it neither reads nor moves the caller's generator (training reseeds it)."""
    bench = _bench_run()
    torch.manual_seed(7)
    bench.trained_digits_vgg19(torch.rand(8, 1, 8, 8), torch.arange(8) % 10, epochs=1)
    after = torch.rand(4)
    torch.manual_seed(7)
    torch.rand(8, 1, 8, 8)
    assert torch.equal(after, torch.rand(4))


def _low_latency():
    spec = importlib.util.spec_from_file_location("annsnn_bench_low_latency", ROOT / "benchmarks" / "low_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_low_latency_names_the_trainer_of_a_missing_local_net(tmp_path, monkeypatch, capsys):
    """--arch mobilenet_v2_jpeg reads a checkpoint no one shares: without it the run stops
    with one usage line naming the command that writes it, before any image is read."""
    bench = _low_latency()
    monkeypatch.setitem(bench.LOCAL_WEIGHTS, "mobilenet_v2_jpeg", tmp_path / "absent.pt")
    monkeypatch.setattr(bench, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(AssertionError("read images")))
    monkeypatch.setattr("sys.argv", ["low_latency.py", "--arch", "mobilenet_v2_jpeg", "--T", "8"])
    try:
        bench.main()
    except SystemExit as stop:
        assert stop.code == 2
    else:
        raise AssertionError("no usage error")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(tmp_path / "absent.pt") in err and "benchmarks/train_mobilenet_v2_jpeg.py --epochs 3" in err


def test_low_latency_normalizes_jpeg_trained_nets_as_they_were_trained():
    """Both nets trained on the JPEG images use the CIFAR statistics they were trained with;
    the shared ResNet-20/32 keep ImageNet's (the MobileNetV2 ran with ImageNet's once)."""
    bench = _low_latency()
    assert bench.JPEG_TRAINED == {"resnet20_jpeg", "mobilenet_v2_jpeg"}
    assert bench.ARCH["mobilenet_v2_jpeg"] == "mobilenet_v2_cifar"
    assert not (bench.JPEG_TRAINED & bench.SHIFTED)
