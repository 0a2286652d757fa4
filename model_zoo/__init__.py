"""annsnn's model zoo: architectures by name (``annsnn.zoo``).

``architectures()`` maps a name to an :class:`ArchSpec`; ``build(name)`` makes
the module. Checkpoints trained by ``annsnn zoo train`` record the arch, the
dataset and the normalization, so ``annsnn convert FILE`` needs no ``--arch``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from annsnn.errors import UsageError

from . import architectures as arch

__all__ = ["ArchSpec", "architectures", "build", "check_architecture", "calibrate_batchnorm", "embedded_checkpoint", "EMBEDDED_ARCH"]

EMBEDDED_ARCH = "digits_cnn"


@dataclass(frozen=True)
class ArchSpec:
    """How to build an architecture and what it expects."""

    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    dataset: str
    description: str
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None  # None: the dataset's
    kwargs: dict = field(default_factory=dict)
    imagenet_weights: str | None = None  # torchvision weights enum name, for --weights DEFAULT


def _tv(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, weights: str | None = None) -> nn.Module:
        import torchvision.models as tvm

        builder = getattr(tvm, name)
        if weights is None:
            return builder(weights=None, num_classes=num_classes)
        try:
            return builder(weights=weights)
        except Exception as exc:  # network or cache failure
            raise UsageError(f"cannot fetch torchvision weights {weights!r} for {name} ({type(exc).__name__}); they need internet on first use") from None

    return build


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def architectures() -> dict[str, ArchSpec]:
    """All architectures by name."""
    specs = [
        ArchSpec("digits_cnn", arch.DigitsCnn, (1, 8, 8), "digits", "small CNN for the embedded 8x8 digits (conv-BN-ReLU x3, AvgPool)"),
        ArchSpec("mlp_s", lambda num_classes=10: arch.mlp([784, 256, num_classes]), (1, 28, 28), "mnist", "MLP 784-256-10"),
        ArchSpec("mlp_m", lambda num_classes=10: arch.mlp([784, 512, 256, 64, num_classes], 0.5), (1, 28, 28), "mnist", "MLP 784-512-256-64-10, dropout 0.5"),
        ArchSpec("mlp_l", lambda num_classes=10: arch.mlp([784, 2000, 500, 64, 16, num_classes], 0.5), (1, 28, 28), "mnist", "MLP 784-2000-500-64-16-10, dropout 0.5"),
        ArchSpec("mlp_400", lambda num_classes=10: arch.mlp([784, 400, num_classes]), (1, 28, 28), "mnist", "MLP 784-400-10 (the size of the 400-neuron STDP network)"),
        ArchSpec("mlp_256x2", lambda num_classes=10: arch.mlp([784, 256, 256, num_classes]), (1, 28, 28), "mnist", "MLP 784-256-256-10"),
        ArchSpec("mnist_cnn2", arch.MnistCnn2, (1, 28, 28), "mnist", "2 convs 5x5 (no pad) + MaxPool, FC 800-500"),
        ArchSpec("lenet5", arch.LeNet5, (1, 28, 28), "mnist", "LeNet-5 with ReLU and AvgPool"),
        ArchSpec("nmnist_cnn", arch.nmnist_cnn, (2, 34, 34), "tonic:NMNIST", "N-MNIST event frames (mean over T): 2 convs 5x5 + AvgPool, FC 800"),
        ArchSpec("cifar_cnn_s", arch.CifarCnnS, (3, 32, 32), "cifar10", "convs 16-16-32-32, AvgPool after each, FC 1024-512"),
        ArchSpec("cifar_cnn_m", arch.CifarCnnM, (3, 32, 32), "cifar10", "convs 32-32-64-64-128-256-256, AvgPool after each"),
        ArchSpec("cifar_cnn5", arch.CifarCnn5, (3, 32, 32), "cifar10", "5 convs 5x5 pad 2, MaxPool after each, FC 512 dropout 0.2"),
        ArchSpec("resnet20", lambda num_classes=10: arch.CifarResNet(20, num_classes), (3, 32, 32), "cifar10", "CIFAR ResNet-20, option-A shortcut", normalization=_IMAGENET),
        ArchSpec("resnet32", lambda num_classes=10: arch.CifarResNet(32, num_classes), (3, 32, 32), "cifar10", "CIFAR ResNet-32, option-A shortcut", normalization=_IMAGENET),
        ArchSpec("vgg11_cifar", lambda num_classes=10: arch.vgg_cifar(11, num_classes, batch_norm=True, pool="avg"), (3, 32, 32), "cifar10", "VGG-11 with BN and AvgPool, CIFAR size"),
        ArchSpec("vgg16_cifar", lambda num_classes=10: arch.vgg_cifar(16, num_classes), (3, 32, 32), "cifar10", "VGG-16, CIFAR size"),
        ArchSpec("vgg16_bn_cifar", lambda num_classes=10: arch.vgg_cifar(16, num_classes, batch_norm=True), (3, 32, 32), "cifar10", "VGG-16 with BN, CIFAR size"),
        ArchSpec("vgg19_cifar", lambda num_classes=10: arch.vgg_cifar(19, num_classes), (3, 32, 32), "cifar10", "VGG-19, CIFAR size"),
        ArchSpec("vgg19_bn_cifar", lambda num_classes=10: arch.vgg_cifar(19, num_classes, batch_norm=True), (3, 32, 32), "cifar10", "VGG-19 with BN, CIFAR size"),
        ArchSpec("mobilenet_v2_cifar", arch.mobilenet_v2_cifar, (3, 32, 32), "cifar10", "MobileNetV2 with a stride-1 stem, CIFAR size"),
        ArchSpec("vgg16", _tv("vgg16"), (3, 224, 224), "imagefolder", "torchvision VGG-16 (ImageNet)", normalization=_IMAGENET, imagenet_weights="DEFAULT"),
        ArchSpec("vgg16_bn", _tv("vgg16_bn"), (3, 224, 224), "imagefolder", "torchvision VGG-16-BN (ImageNet)", normalization=_IMAGENET, imagenet_weights="DEFAULT"),
        ArchSpec("vgg19", _tv("vgg19"), (3, 224, 224), "imagefolder", "torchvision VGG-19 (ImageNet)", normalization=_IMAGENET, imagenet_weights="DEFAULT"),
        ArchSpec("vgg19_bn", _tv("vgg19_bn"), (3, 224, 224), "imagefolder", "torchvision VGG-19-BN (ImageNet)", normalization=_IMAGENET, imagenet_weights="DEFAULT"),
        ArchSpec("mobilenet_v2", _tv("mobilenet_v2"), (3, 224, 224), "imagefolder", "torchvision MobileNetV2 (ImageNet)", normalization=_IMAGENET, imagenet_weights="DEFAULT"),
    ]
    return {spec.name: spec for spec in specs}


def check_architecture(name: str) -> ArchSpec:
    """The spec of architecture ``name``, or one line naming ``annsnn zoo list``."""
    specs = architectures()
    if name not in specs:
        raise UsageError(f"unknown architecture {name!r}: run 'annsnn zoo list' to see the names")
    return specs[name]


def build(name: str, num_classes: int | None = None, weights: str | None = None) -> nn.Module:
    """Build architecture ``name``; ``weights`` only for torchvision ImageNet models."""
    spec = check_architecture(name)
    kwargs = {}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if weights is not None:
        if spec.imagenet_weights is None:
            raise UsageError(f"--weights applies to torchvision ImageNet models only, not {name}")
        kwargs["weights"] = weights
    return spec.builder(**kwargs)


def calibrate_batchnorm(model: nn.Module, images, batch_size: int = 64) -> nn.Module:
    """Give an untrained model real BatchNorm statistics: the cumulative average over
    ``images`` in batches of ``batch_size`` (``momentum=None``). Returns it in eval mode."""
    import torch

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in images.split(batch_size):
            model(batch)
    return model.eval()


def embedded_checkpoint() -> Path:
    """The shipped digits checkpoint (trained by ``make embedded``)."""
    return Path(__file__).parent / "checkpoints" / "digits_cnn.pt"
