"""Every model format loads to the same function and converts.

Each file is saved the way its users save it: ``torch.jit.trace`` / ``torch.jit.script`` +
``torch.jit.save``, ``torch.export.save``, ``torch.onnx.export`` (TorchScript-based and
dynamo exporters, at several opsets), ``safetensors.torch.save_file`` of a state_dict.
The model has ReLU6, BatchNorm2d and BatchNorm1d. The loaded model must give the
original's outputs, and its SNN must converge to the original's outputs as T grows.
"""
from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile

import pytest
import torch
from torch import nn

from annsnn.artifact import load_snn, save_snn
from annsnn.convert import ConversionOptions, LayerKind
from annsnn.errors import UsageError
from annsnn.model_files import convertible_module, load_model
from annsnn.modes import parse_mode
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate

from conftest import train_quick

SHAPE = (1, 8, 8)


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10),
    )


@pytest.fixture(scope="module")
def trained(digits):
    (xtr, ytr), _ = digits
    torch.manual_seed(0)
    return train_quick(_net(), xtr, ytr, epochs=6)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _save(model: nn.Module, kind: str, path) -> None:
    x = torch.zeros(2, *SHAPE)
    if kind == "traced":
        _quiet(torch.jit.save, _quiet(torch.jit.trace, model, x), str(path))
    elif kind == "scripted":
        _quiet(torch.jit.save, _quiet(torch.jit.script, model), str(path))
    elif kind in ("pt2", "pt2-decomposed"):
        batch = torch.export.Dim("batch", min=2)
        program = _quiet(torch.export.export, model, (x,), dynamic_shapes=({0: batch},))
        if kind == "pt2-decomposed":  # core ATen: convolution, addmm(permute(W)), _native_batch_norm_legit_no_training
            program = _quiet(program.run_decompositions)
        torch.export.save(program, str(path))
    elif kind.startswith("onnx-ts"):
        opset = kind.split("-")[-1]
        kwargs = {} if opset == "default" else {"opset_version": int(opset)}
        _quiet(torch.onnx.export, model, (x,), str(path), dynamo=False, input_names=["input"], dynamic_axes={"input": {0: "batch"}}, **kwargs)
    elif kind.startswith("onnx-dynamo"):
        pytest.importorskip("onnxscript")
        opset = kind.split("-")[-1]
        kwargs = {} if opset == "default" else {"opset_version": int(opset)}
        _quiet(torch.onnx.export, model, (x,), str(path), dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), **kwargs)
    else:  # pragma: no cover
        raise ValueError(kind)


_SUFFIX = {"traced": ".pt", "scripted": ".pt", "pt2": ".pt2", "pt2-decomposed": ".pt2"}
_SLOW = pytest.mark.slow
FORMATS = ["traced", "scripted", "pt2", "onnx-ts-13", pytest.param("onnx-ts-17", marks=_SLOW), pytest.param("onnx-ts-18", marks=_SLOW),
           "onnx-ts-default", pytest.param("onnx-dynamo-18", marks=_SLOW), "onnx-dynamo-default"]


def _convert_and_check(module: nn.Module, original: nn.Module, digits, tmp_path) -> dict[int, float]:
    (xtr, _), (xte, _) = digits
    snn, report = ann_to_snn(module, [xtr[:256]], input_shape=SHAPE, options=ConversionOptions.plain(mode=parse_mode("max")))
    assert [(layer.kind, layer.ceiling, layer.label) for layer in report.layers] == [(LayerKind.IF, 6.0, "IF clip 6"), (LayerKind.IF, None, "IF"), (LayerKind.IF, None, "IF")]
    path = tmp_path / "m.snn.pt"
    save_snn(snn, path)
    snn = load_snn(path)
    x = xte[:32]
    with torch.no_grad():
        reference = original(x)
    result = simulate(snn, x, [16, 256])
    return {t: float((result.outputs[t] / t - reference).norm() / reference.norm()) for t in (16, 256)}


@pytest.mark.parametrize("kind", FORMATS)
def test_format_loads_exactly_and_its_snn_converges(trained, digits, tmp_path, kind):
    path = tmp_path / f"model{_SUFFIX.get(kind, '.onnx')}"
    _save(trained, kind, path)
    loaded = load_model(path, input_shape=SHAPE if kind in ("traced", "scripted") else None)
    module = convertible_module(loaded, SHAPE)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert loaded.record.get("input_shape", list(SHAPE)) == list(SHAPE)
    x = digits[1][0][:100]
    with torch.no_grad():
        assert torch.allclose(module(x), trained(x), rtol=1e-5, atol=1e-5)
    error = _convert_and_check(module, trained, digits, tmp_path)
    assert error[256] < error[16] / 4
    assert error[256] < 0.05


def test_torchscript_needs_an_input_shape_only_when_converting(trained, tmp_path):
    path = tmp_path / "traced.pt"
    _save(trained, "traced", path)
    loaded = load_model(path)
    assert loaded.kind == "torchscript" and isinstance(loaded.module, torch.jit.ScriptModule)
    x = torch.rand(3, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(convertible_module(loaded, SHAPE)(x), trained(x), atol=1e-5)


def test_safetensors_with_zoo_arch(digits, tmp_path):
    from safetensors.torch import save_file

    from annsnn.zoo import build

    model = build("digits_cnn").eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(UsageError, match="--arch"):
        load_model(path)
    loaded = load_model(path, "digits_cnn")
    assert loaded.kind == "safetensors"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)


@pytest.mark.slow
@pytest.mark.parametrize("arch, builder", [("torchvision:mobilenet_v2", "torchvision"), ("timm:mobilenetv2_050", "timm")])
def test_safetensors_with_library_arch_infers_classes_and_converts(digits, tmp_path, arch, builder):
    """A fine-tuned library model (ReLU6, BatchNorm) in safetensors needs only --arch."""
    from safetensors.torch import save_file

    if builder == "torchvision":
        import torchvision

        model = torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=7)
    else:
        timm = pytest.importorskip("timm")
        model = timm.create_model("mobilenetv2_050", pretrained=False, num_classes=7)
    model.eval()
    path = tmp_path / "finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(path, arch)
    assert loaded.kind == "safetensors" and loaded.arch == arch
    assert loaded.record["input_shape"] == [3, 224, 224]
    assert loaded.record["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = loaded.module(x)
        assert out.shape == (2, 7) and torch.equal(out, model(x))
        module = convertible_module(loaded, (3, 32, 32))
        assert torch.allclose(module(x), out, rtol=1e-5, atol=1e-5)
    snn, report = ann_to_snn(module, [torch.rand(4, 3, 32, 32)], input_shape=(3, 32, 32), options=ConversionOptions.plain())
    assert report.layers and all(layer.spiking for layer in report.layers)


def test_library_arch_errors(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(UsageError, match="unknown torchvision architecture"):
        load_model(path, "torchvision:not_a_net")
    with pytest.raises(UsageError, match="classifier weight"):
        load_model(path, "torchvision:resnet18")


def _edit_json_member(source, target, suffix: str, edit) -> None:
    """Copy the zip ``source`` to ``target``, with ``edit(obj)`` applied in place to the JSON
    of the member whose name ends with ``suffix``."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith(suffix):
                obj = json.loads(data)
                edit(obj)
                data = json.dumps(obj).encode()
            dst.writestr(item, data)


def test_pickled_module_inside_pt2_needs_trust(trained, tmp_path):
    """A .pt2 whose weight is flagged ``use_pickle`` would be unpickled by torch.export.load."""
    good = tmp_path / "good.pt2"
    _save(trained, "pt2", good)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt2"
    victims: list[str] = []

    def flag_pickle(config: dict) -> None:
        first = next(iter(config["config"]))
        config["config"][first]["use_pickle"] = True
        victims.append(config["config"][first]["path_name"])

    _edit_json_member(good, evil, "weights/model_weights_config.json", flag_pickle)
    victim = victims[0]
    with zipfile.ZipFile(evil, "a") as dst:
        buffer = io.BytesIO()
        torch.save(Payload(), buffer)
        names = zipfile.ZipFile(good).namelist()
        target = next(n for n in names if n.endswith(f"weights/{victim}"))
    # rewrite the victim payload with the pickle
    rebuilt = tmp_path / "evil2.pt2"
    with zipfile.ZipFile(evil) as src, zipfile.ZipFile(rebuilt, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, buffer.getvalue() if item.filename == target else src.read(item.filename))
    with pytest.raises(UsageError, match="--trust"):
        load_model(rebuilt)
    assert not marker.exists()


def test_pickled_module_in_pt_needs_trust(trained, tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(trained, str(path))
    with pytest.raises(UsageError, match="--trust"):
        load_model(path)


def test_onnx_names_are_sanitized_and_survive_save_and_load(trained, digits, tmp_path):
    path = tmp_path / "m.onnx"
    _save(trained, "onnx-ts-default", path)
    module = load_model(path).module
    names = [name for name, _ in module.named_modules() if name]
    assert names and all("/" not in name for name in names)
    (xtr, _), _ = digits
    snn, _ = ann_to_snn(module, [xtr[:64]], input_shape=SHAPE, options=ConversionOptions.plain())
    save_snn(snn, tmp_path / "m.snn.pt")
    assert set(load_snn(tmp_path / "m.snn.pt").neuron_layers()) == set(snn.neuron_layers())


def test_onnx_unsupported_node_is_named(tmp_path):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1)).eval()
    path = tmp_path / "s.onnx"
    _quiet(torch.onnx.export, model, (torch.zeros(1, *SHAPE),), str(path), dynamo=False)
    with pytest.raises(UsageError, match="Softmax"):
        load_model(path)


@pytest.mark.parametrize("kind, suffix", [("traced", ".pt"), ("pt2", ".pt2"), ("onnx-ts-default", ".onnx"), ("safetensors", ".safetensors")])
def test_truncated_file_is_one_line_exit_2(trained, tmp_path, capsys, kind, suffix):
    from annsnn.cli.main import main

    path = tmp_path / f"m{suffix}"
    if kind == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    else:
        _save(trained, kind, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as info:
        main(["info", str(path), "--arch", "digits_cnn", "--input-shape", "1,8,8"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_info_and_convert_accept_new_formats(trained, tmp_path, capsys):
    from annsnn.cli.main import main

    path = tmp_path / "traced.pt"
    _save(trained, "traced", path)
    onnx_path = tmp_path / "m.onnx"
    _save(trained, "onnx-ts-default", onnx_path)
    for args in (["info", str(path), "--input-shape", "1,8,8"], ["info", str(onnx_path)],
                 ["convert", str(path), "--data", "digits", "--calib-samples", "128", "--readout-delay", "0", "--out", str(tmp_path / "t.snn.pt")]):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        assert code == 0, err
    assert (tmp_path / "t.snn.pt").is_file()


class _Residual(nn.Module):
    """A residual block, functional ReLU, adaptive pool and ``x.view(x.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        y = torch.relu(y + self.b2(self.c2(y)))
        y = nn.functional.adaptive_avg_pool2d(y, 4)
        return self.fc(y.view(y.size(0), -1))


@pytest.mark.parametrize("kind", ["traced", "scripted", "pt2", "pt2-decomposed", "onnx-ts-default", pytest.param("onnx-dynamo-default", marks=_SLOW)])
def test_residual_net_with_dynamic_view_loads_and_converts(digits, tmp_path, kind):
    """The dynamic-batch ``view`` arrives as sym_size (export) or Shape->Gather->Concat (ONNX)."""
    torch.manual_seed(0)
    model = _Residual().eval()
    path = tmp_path / f"model{_SUFFIX.get(kind, '.onnx')}"
    _save(model, kind, path)
    module = convertible_module(load_model(path), SHAPE)
    x = digits[1][0][:50]
    with torch.no_grad():
        assert torch.allclose(module(x), model(x), rtol=1e-5, atol=1e-5)
    snn, report = ann_to_snn(module, [digits[0][0][:256]], input_shape=SHAPE, options=ConversionOptions.plain(mode=parse_mode("max")))
    assert len(report.layers) == 2
    with torch.no_grad():
        reference = model(x)
    result = simulate(snn, x, [16, 256])
    error = {t: float((result.outputs[t] / t - reference).norm() / reference.norm()) for t in (16, 256)}
    assert error[256] < error[16] / 4


def test_onnx_matmul_add_becomes_one_linear(tmp_path):
    """A Linear on a 3-d tensor exports as MatMul + Add; it imports as one nn.Linear with a bias."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(2), nn.Linear(64, 16), nn.ReLU(), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = tmp_path / "mm.onnx"
    _quiet(torch.onnx.export, model, (torch.zeros(2, *SHAPE),), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}})
    import onnx

    assert {"MatMul", "Add"} <= {n.op_type for n in onnx.load(str(path)).graph.node}
    module = load_model(path).module
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 2 and all(m.bias is not None for m in linears)
    x = torch.rand(5, *SHAPE)
    with torch.no_grad():
        assert torch.allclose(module(x), model(x), rtol=1e-5, atol=1e-5)


def test_bare_state_dict_class_count_comes_from_the_last_layer(tmp_path):
    """digits_cnn has a hidden ``classifier.1`` (64); the old guess took it for the classifier."""
    from annsnn.zoo import build

    model = build("digits_cnn", num_classes=7)
    path = tmp_path / "sd.pt"
    torch.save(model.state_dict(), str(path))
    loaded = load_model(path, "digits_cnn")
    assert loaded.module(torch.rand(2, *SHAPE)).shape == (2, 7)


def _onnx_file(path, nodes, inits, out_shape, in_shape=("N", 3, 4, 4)):
    """A hand-built ONNX graph (opset 17) with one input ``x`` and one output ``y``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


def _onnx_reference(model, x):
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    return torch.from_numpy(np.asarray(ReferenceEvaluator(model).run(None, {"x": x.numpy()})[0]))


@pytest.mark.parametrize("axes", [[-1, -2], [-2, -1], [2, 3], [3, -2]])
def test_onnx_squeeze_with_negative_axes_matches_onnx(tmp_path, axes):
    """ONNX axes count from the end of the *input*; squeezing them one by one in sorted order
    shifted the later ones (the import gave [N, 3, 1] for [N, 3])."""
    import numpy as np
    from onnx import helper

    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    model = _onnx_file(tmp_path / "sq.onnx", [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
                                              helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Squeeze", ["p", "ax"], ["y"])],
                       {"w": eye, "ax": np.array(axes, np.int64)}, ["N", 3])
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        got, want = load_model(tmp_path / "sq.onnx").module(x), _onnx_reference(model, x)
    assert got.shape == want.shape and torch.allclose(got, want.to(got.dtype), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("axes", [[-1, -2], [-2, -1], [2, 3], [2, -1]])
def test_onnx_unsqueeze_with_negative_axes_matches_onnx(tmp_path, axes):
    """Unsqueeze's axes count in the *output*'s rank (ONNX): [-2, -1] on [N, 3] is [N, 3, 1, 1]
    (the import gave [N, 1, 3, 1])."""
    import numpy as np
    from onnx import helper

    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Unsqueeze", ["f", "ax"], ["y"])]
    model = _onnx_file(tmp_path / "us.onnx", nodes, {"w": eye, "ax": np.array(axes, np.int64)}, ["N", 3, 1, 1])
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        got, want = load_model(tmp_path / "us.onnx").module(x), _onnx_reference(model, x)
    assert got.shape == want.shape and torch.allclose(got, want.to(got.dtype), rtol=1e-6, atol=1e-7)


def test_onnx_matmul_add_with_a_row_bias_is_not_merged(tmp_path):
    """Add after MatMul merges into a Linear's bias only when the constant runs along the last
    axis; a [rows, 1] constant varies down the rows and is refused, not misread as [16]."""
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(1)
    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]), helper.make_node("MatMul", ["r", "W"], ["m"]),
             helper.make_node("Add", ["m", "B"], ["a"]), helper.make_node("Flatten", ["a"], ["y"])]
    inits = {"w": eye, "W": rng.standard_normal((4, 4)).astype(np.float32), "B": np.linspace(-1, 1, 4, dtype=np.float32).reshape(4, 1)}
    _onnx_file(tmp_path / "row.onnx", nodes, inits, ["N", 48])
    with pytest.raises(UsageError, match="stored tensor added"):
        load_model(tmp_path / "row.onnx")
    inits["B"] = np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 1, 1, 4)  # along the last axis: merged, and right
    model = _onnx_file(tmp_path / "col.onnx", nodes, inits, ["N", 48])
    x = torch.randn(2, 3, 4, 4)
    module = load_model(tmp_path / "col.onnx").module
    with torch.no_grad():
        assert torch.allclose(module(x), _onnx_reference(model, x), atol=1e-6)
    assert [m.bias is not None for m in module.modules() if isinstance(m, nn.Linear)] == [True]


@pytest.mark.parametrize("bias_shape", [(3,), (1, 3), (1, 1), ()])
def test_onnx_gemm_bias_of_any_broadcastable_shape(tmp_path, bias_shape):
    """Gemm's C broadcasts to [M, N]: a [1, N] bias used to stop with an internal error."""
    import numpy as np
    from onnx import helper

    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    bias = np.arange(1, 1 + int(np.prod(bias_shape or (1,))), dtype=np.float32).reshape(bias_shape)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "G", "gb"], ["y"], transB=1, beta=0.5)]
    model = _onnx_file(tmp_path / "gemm.onnx", nodes, {"w": eye, "G": np.eye(3, dtype=np.float32) * 2, "gb": bias}, ["N", 3])
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.allclose(load_model(tmp_path / "gemm.onnx").module(x), _onnx_reference(model, x), atol=1e-6)


def test_onnx_gemm_bias_that_varies_by_row_is_refused(tmp_path):
    import numpy as np
    from onnx import helper

    eye = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]), helper.make_node("Gemm", ["f", "G", "gb"], ["y"], transB=1)]
    _onnx_file(tmp_path / "g.onnx", nodes, {"w": eye, "G": np.eye(3, dtype=np.float32), "gb": np.ones((2, 1), np.float32)}, [2, 3], in_shape=(2, 3, 4, 4))
    with pytest.raises(UsageError, match="Gemm"):
        load_model(tmp_path / "g.onnx")


@pytest.mark.parametrize("expression", ["__import__('os').system('touch {marker}') + 1", "Symbol('s0').__class__", "open('{marker}', 'w') and 1",
                                        "Symbol('s0', positive=True, integer=True) + eval('1')"])
def test_a_size_expression_that_runs_code_inside_pt2_needs_trust(trained, tmp_path, expression):
    """torch.export.load hands each symbolic size's text to sympy.sympify, which evaluates
    it as Python: a crafted .pt2 ran code on 'annsnn info' without --trust (so did the same
    file named .pt: formats are recognised by content)."""
    good = tmp_path / "good.pt2"
    _save(trained, "pt2", good)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt2"

    def plant(program: dict) -> None:
        first = next(iter(program["graph_module"]["graph"]["tensor_values"].values()))
        first["sizes"][0] = {"as_expr": {"expr_str": expression.format(marker=marker), "hint": {"as_int": 2}}}

    _edit_json_member(good, evil, "models/model.json", plant)
    load_model(good)  # the exported file itself: its sizes are plain sympy
    with pytest.raises(UsageError, match="--trust"):
        load_model(evil)
    with pytest.raises(UsageError, match="--trust"):
        load_model(evil.rename(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_size_expressions_torch_export_writes_are_plain(tmp_path):
    """The check must not refuse what torch.export itself writes: strided convolutions and
    pools over dynamic batch, height and width give nested FloorDiv/Max/Mul/Add in srepr form."""
    from annsnn.exported_program import _size_expressions, check_pt2, plain_size_expression

    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)).eval()
    auto = torch.export.Dim.AUTO
    program = _quiet(torch.export.export, net, (torch.rand(2, 1, 16, 16),), dynamic_shapes=({0: auto, 2: auto, 3: auto},))
    path = tmp_path / "dynamic.pt2"
    torch.export.save(program, str(path))
    with zipfile.ZipFile(path) as archive:
        texts = {t for n in archive.namelist() if n.endswith("models/model.json") for t in _size_expressions(json.loads(archive.read(n)))}
    assert any("FloorDiv" in t and "Max" in t for t in texts) and all(plain_size_expression(t) for t in texts), texts
    check_pt2(path)
    assert not plain_size_expression("Symbol('s0').func") and not plain_size_expression("Integer(1) if 1 else 2")
