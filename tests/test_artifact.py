import json

import pytest
import torch

from annsnn.conversion_options import ConversionOptions
from annsnn.artifact import load_snn, save_snn
from annsnn.errors import UsageError
from annsnn.model_files import load_model
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate
from annsnn.zoo import embedded_checkpoint


@pytest.fixture(scope="module")
def converted(digits):
    (xtr, _), (xte, _) = digits
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]), meta={"dataset": {"name": "digits"}}, options=ConversionOptions.plain())
    return snn, xte[:32]


def test_round_trip_is_bit_identical_and_weights_only(tmp_path, converted):
    snn, x = converted
    path = tmp_path / "m.snn.pt"
    save_snn(snn, path)
    payload = torch.load(str(path), weights_only=True)  # no pickled code inside
    assert payload["format"] == "annsnn-snn"
    loaded = load_snn(path)
    assert torch.equal(simulate(snn, x, [9]).outputs[9], simulate(loaded, x, [9]).outputs[9])
    assert torch.equal(snn.ann(x), loaded.ann(x))
    assert loaded.meta["dataset"]["name"] == "digits" and loaded.meta["options"]["mode"]["text"] == "99.99%"


def test_a_tampered_graph_cannot_name_arbitrary_functions(tmp_path, converted):
    snn, _ = converted
    path = tmp_path / "m.snn.pt"
    save_snn(snn, path)
    payload = torch.load(str(path), weights_only=True)
    spec = json.loads(payload["snn_graph"])
    spec["nodes"][1]["op"] = "call_function"
    spec["nodes"][1]["target"] = "os.system"
    payload["snn_graph"] = json.dumps(spec)
    torch.save(payload, str(path))
    with pytest.raises(UsageError, match="does not allow"):
        load_snn(path)


def test_not_an_snn_file(tmp_path):
    path = tmp_path / "x.snn.pt"
    torch.save({"a": torch.zeros(1)}, str(path))
    with pytest.raises(UsageError, match="not an annsnn SNN file"):
        load_snn(path)


# ---------------------------------------------------------------------------
# crafted files: nothing in the JSON graph may reach the Python source fx generates


def _payload_code(marker) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def _rename_node(spec: dict, old: str, new: str) -> None:
    def walk(value):
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if value.get("node") == old:
                return {"node": new}
            return {k: walk(v) for k, v in value.items()}
        return value

    for node in spec["nodes"]:
        if node["name"] == old:
            node["name"] = new
        node["args"], node["kwargs"] = walk(node["args"]), walk(node["kwargs"])


def _evil_placeholder_target(spec, code):
    spec["nodes"][0]["target"] = f"x=({code})"


def _evil_node_name(spec, code):
    _rename_node(spec, "encoder", f"encoder = {code}; encoder")


def _evil_module_path(spec, code):
    # fx writes a non-identifier part as getattr(self, "PART"); the part may hold no dot (fx splits there)
    code = code.replace("__import__('pathlib').Path(", "getattr(getattr(__import__('pathlib'), 'Path')(").replace(").touch()", "), 'touch')()")
    bad = f'encoder") if {code} else getattr(self, "encoder'
    spec["modules"][bad] = spec["modules"].pop("encoder")
    spec["nodes"][1]["target"] = bad


def _evil_dunder_module_path(spec, code):
    spec["modules"]["encoder.__class__"] = spec["modules"].pop("encoder")
    spec["nodes"][1]["target"] = "encoder.__class__"


def _evil_keyword_module_path(spec, code):
    spec["modules"]["model.class"] = spec["modules"].pop("encoder")
    spec["nodes"][1]["target"] = "model.class"


def _evil_kwargs_key(spec, code):
    # a method call whose keyword name carries code: ``x.flatten(start_dim=<code> or 1, end_dim = -1)``
    last = spec["nodes"][-2]["name"]
    spec["nodes"].insert(-1, {"name": "flat", "op": "call_method", "target": "flatten", "args": {"tuple": [{"node": last}]},
                              "kwargs": {"dict": {f"start_dim=({code}) or 1, end_dim": -1}}})
    spec["nodes"][-1]["args"] = {"tuple": [{"node": "flat"}]}


def _evil_dunder_getattr(spec, code):
    last = spec["nodes"][-2]["name"]
    spec["nodes"].insert(-1, {"name": "cls", "op": "call_function", "target": "builtins.getattr", "args": {"tuple": [{"node": last}, "__class__"]}, "kwargs": {"dict": {}}})


def _evil_dunder_node_name(spec, code):
    _rename_node(spec, "encoder", "__builtins__")


def _evil_builtin_shadow(spec, code):
    _rename_node(spec, "encoder", "getattr")  # would shadow the getattr the generated code calls


EVIL = {
    "placeholder target": _evil_placeholder_target,
    "node name": _evil_node_name,
    "module path with a quote": _evil_module_path,
    "dunder module path": _evil_dunder_module_path,
    "keyword module path": _evil_keyword_module_path,
    "kwargs key": _evil_kwargs_key,
    "getattr of a dunder": _evil_dunder_getattr,
    "dunder node name": _evil_dunder_node_name,
    "node name shadowing a builtin": _evil_builtin_shadow,
}


def _craft(converted, tmp_path, case) -> tuple:
    snn, _ = converted
    path = tmp_path / "evil.snn.pt"
    marker = tmp_path / "PWNED"
    save_snn(snn, path)
    payload = torch.load(str(path), weights_only=True)
    spec = json.loads(payload["snn_graph"])
    EVIL[case](spec, _payload_code(marker))
    payload["snn_graph"] = json.dumps(spec)
    torch.save(payload, str(path))
    return path, marker


@pytest.mark.parametrize("case", list(EVIL))
def test_a_crafted_graph_is_refused_before_anything_runs(tmp_path, converted, case):
    path, marker = _craft(converted, tmp_path, case)
    try:
        with pytest.raises(UsageError, match="SNN file"):
            loaded = load_snn(path)
            simulate(loaded, converted[1][:2], [2])  # old code: the payload runs here at the latest
    finally:
        assert not marker.exists(), f"code from the file ran ({case})"


@pytest.mark.parametrize("case", ["placeholder target", "node name", "module path with a quote", "kwargs key"])
def test_cli_refuses_a_crafted_file_in_one_line(tmp_path, converted, case, capsys):
    from annsnn.cli.main import main

    path, marker = _craft(converted, tmp_path, case)
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", str(path), "--T", "2", "--samples", "4"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exited.value.code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and "SNN file" in lines[0], lines
    assert not marker.exists()


def test_annsnn_evaluate_of_a_crafted_file_in_a_fresh_process(tmp_path, converted):
    """The issue's reproduction: ``annsnn evaluate evil.snn.pt`` as a command."""
    import os
    import subprocess
    import sys

    path, marker = _craft(converted, tmp_path, "placeholder target")
    env = dict(os.environ, ANNSNN_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-m", "annsnn", "evaluate", str(path), "--T", "2", "--samples", "4"], capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not marker.exists()


def test_onnx_style_module_names_still_load_bit_identically(tmp_path):
    """onnx2torch names modules '0/Conv', '1/Relu'; such a file must keep loading."""
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    renamed = nn.Module()
    for i, (name, child) in enumerate(model.named_children()):
        renamed.add_module(f"{i}/{type(child).__name__}", child)
    renamed.forward = lambda x: model(x)  # noqa: E731 - only to trace below
    from torch import fx

    graph = fx.symbolic_trace(model)
    for node in graph.graph.nodes:
        if node.op == "call_module":
            node.target = f"{node.target}/{type(graph.get_submodule(node.target)).__name__}"
    gm = fx.GraphModule(renamed, graph.graph)
    torch.manual_seed(0)
    snn, _ = ann_to_snn(gm, [torch.rand(32, 1, 8, 8)], input_shape=(1, 8, 8), options=ConversionOptions.plain())
    path = tmp_path / "onnx.snn.pt"
    save_snn(snn, path)
    loaded = load_snn(path)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(simulate(snn, x, [5]).outputs[5], simulate(loaded, x, [5]).outputs[5])
    assert sorted(n for n, _ in loaded.graph.named_modules()) == sorted(n for n, _ in snn.graph.named_modules())
