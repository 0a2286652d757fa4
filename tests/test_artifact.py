import json

import pytest
import torch

from annsnn.artifact import load_snn, save_snn
from annsnn.errors import UsageError
from annsnn.io import load_model
from annsnn.pipeline import ann_to_snn
from annsnn.simulate import simulate
from annsnn.zoo import embedded_checkpoint


@pytest.fixture(scope="module")
def converted(digits):
    (xtr, _), (xte, _) = digits
    snn, _ = ann_to_snn(load_model(embedded_checkpoint()).module, [xtr[:256]], input_shape=(1, 8, 8), normalization=([0.3054], [0.3761]), meta={"dataset": {"name": "digits"}})
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
