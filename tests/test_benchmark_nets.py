"""The nets benchmarks/run.py trains for its rows are the same on every run: the reduced
VGG19 of the suite and NIR rows was built from whatever state the global RNG had, so its
ANN scored 97.22 % in one row and 99.17 % in another of the same regeneration (63f4c97)."""
from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """benchmarks/NAME.py as a module (its main() not run)."""
    spec = importlib.util.spec_from_file_location(f"annsnn_bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_digits_vgg19_is_the_same_whatever_ran_before():
    bench = _script("run")
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
    bench = _script("run")
    torch.manual_seed(7)
    bench.trained_digits_vgg19(torch.rand(8, 1, 8, 8), torch.arange(8) % 10, epochs=1)
    after = torch.rand(4)
    torch.manual_seed(7)
    torch.rand(8, 1, 8, 8)
    assert torch.equal(after, torch.rand(4))


def test_low_latency_names_the_trainer_of_a_missing_local_net(tmp_path, monkeypatch, capsys):
    """--arch mobilenet_v2_jpeg reads a checkpoint no one shares: without it the run stops
    with one usage line naming the command that writes it, before any image is read."""
    bench = _script("low_latency")
    monkeypatch.setitem(bench.NETS, "mobilenet_v2_jpeg", dataclasses.replace(bench.NETS["mobilenet_v2_jpeg"], weights=tmp_path / "absent.pt"))
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


def test_low_latency_normalizes_each_net_as_it_was_trained():
    """The MobileNetV2 takes the statistics its trainer used (it once ran with ImageNet's);
    ResNet-20-JPEG the CIFAR ones of ../shared's README; the shared ResNet-20/32 ImageNet's.
    Only those two are marked as scored on shifted images."""
    bench, trainer = _script("low_latency"), _script("train_mobilenet_v2_jpeg")
    nets = bench.NETS
    assert (nets["mobilenet_v2_jpeg"].mean, nets["mobilenet_v2_jpeg"].std) == (trainer.MEAN, trainer.STD)
    assert nets["mobilenet_v2_jpeg"].arch == "mobilenet_v2_cifar"
    assert (nets["resnet20_jpeg"].mean, nets["resnet20_jpeg"].std) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    for name in ("resnet20", "resnet32"):
        assert (nets[name].mean, nets[name].std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert {name for name, net in nets.items() if net.shifted} == {"resnet20", "resnet32"}
