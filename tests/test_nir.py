"""NIR export/import, the snnTorch cross-check, and counting of SNNs annsnn did not convert."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from annsnn import Analyzer, ConversionOptions, ann_to_snn, load_model, parse_mode, simulate
from annsnn.errors import UsageError
from annsnn.foreign_snn import from_spikingjelly, network_from_direct
from annsnn.layers import IFNeurons
from annsnn.nir_io import export_nir, load_nir, read_nir, to_nir
from annsnn.zoo import embedded_checkpoint
from conftest import run_cli


run = run_cli


@pytest.fixture(scope="module")
def digits_snn(digits):
    """The bundled digits CNN converted with the default options (as 'annsnn convert' does)."""
    (x_train, _), _ = digits
    loaded = load_model(embedded_checkpoint())
    norm = (loaded.record["normalization"]["mean"], loaded.record["normalization"]["std"])
    snn, _ = ann_to_snn(loaded.module, [x_train[:512]], input_shape=(1, 8, 8), options=ConversionOptions.plain(), normalization=norm,
                        meta={"dataset": {"name": "digits"}})
    return snn


@pytest.fixture(scope="module")
def digits_nir(digits_snn, tmp_path_factory):
    path = tmp_path_factory.mktemp("nir") / "digits.nir"
    export_nir(digits_snn, path)
    return path


def _neuron_counts(snn, x, T):
    result = simulate(snn, x, T, record_spikes=True)
    return result, list(result.spike_counts.values())


def test_round_trip_is_bit_identical_and_documents_semantics(digits_snn, digits_nir, digits):
    _, (x_test, _) = digits
    x = x_test[:48]
    back = load_nir(digits_nir)
    assert [type(m) for m in back.neuron_layers().values()] == [IFNeurons] * 4
    a, counts_a = _neuron_counts(digits_snn, x, 16)
    b, counts_b = _neuron_counts(back, x, 16)
    assert torch.equal(a.outputs[16], b.outputs[16])
    assert len(counts_a) == 4 and all(torch.equal(p, q) for p, q in zip(counts_a, counts_b))
    graph = read_nir(digits_nir)
    kinds = sorted(type(n).__name__ for n in graph.nodes.values())
    assert kinds == sorted(["Input", "Output", "Conv2d", "Conv2d", "Conv2d", "IF", "IF", "IF", "IF", "AvgPool2d", "AvgPool2d", "Flatten", "Affine", "Affine"])
    if_node = next(n for n in graph.nodes.values() if type(n).__name__ == "IF")
    assert np.all(if_node.r == 1) and np.all(if_node.v_threshold == 1)
    meta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in if_node.metadata.items()}
    assert meta["reset"] == "subtract" and meta["fires_at"] == ">=" and float(meta["v_init"]) == 0.0
    gmeta = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in graph.metadata.items()}
    import json

    assert json.loads(gmeta["input_normalization_mean"]) == pytest.approx([0.3054]) and "analog" in gmeta["input_encoding"]


def _snntorch_rule(x_seq: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """snnTorch 1.0 ``Leaky(beta=1, reset_mechanism="subtract", reset_delay=False)``, written
    out from its forward(): r = 1[m > 1] on the previous potential; m = m + x - r;
    s = 1[m > 1]; m = m - (s - r). It differs from annsnn's IF (fire at v >= 1, subtract
    once) in two documented places: a strict threshold, and a neuron whose potential is
    still above threshold after its reset needs m + x > 2 to fire again."""
    spikes = torch.empty_like(x_seq)
    for t in range(x_seq.shape[0]):
        r = (v > 1.0).float()
        v = v + x_seq[t] - r
        spikes[t] = (v > 1.0).float()
        v = v - (spikes[t] - r)
    return spikes, v


class _SnnTorchRuleNeurons(IFNeurons):
    def forward(self, x):
        seq = x.reshape(self.steps, -1, *x.shape[1:])
        if self.v is None:
            self.v = torch.zeros(seq.shape[1:])
        spikes, self.v = _snntorch_rule(seq, self.v)
        return spikes.reshape(x.shape)


def test_snntorch_runs_the_export_with_the_same_spikes(digits_snn, digits_nir, digits):
    """A second framework reads the .nir: snnTorch 1.0.0's neurons, run by nirtorch's graph
    executor. Its spike counts per layer and step equal annsnn's simulation of the same file
    with snnTorch's documented reset rule (_snntorch_rule), exactly. Against annsnn's own IF
    they agree in the first layer and differ only by that rule further on."""
    import nir
    import nirtorch
    import snntorch
    from snntorch.import_nir import _nir_to_snntorch_module, import_from_nir

    graph = nir.read(str(digits_nir))
    stock = import_from_nir(nir.read(str(digits_nir)))
    stock_neurons = [m for m in stock.modules() if isinstance(m, snntorch.Leaky)]
    # snnTorch 1.0.0 maps nir.IF to Leaky(beta=0.9, init_hidden=False): a leak NIR's IF does not
    # have, and (spk, mem) tuples its own graph executor cannot pass on. We map IF to the
    # same snnTorch neuron with beta=1 (dv/dt = R*I with R=dt=1) and keep its other mappings.
    assert len(stock_neurons) == 4 and all(float(m.beta) == pytest.approx(0.9) for m in stock_neurons)
    node_map = {t: (lambda n: _nir_to_snntorch_module(n, init_hidden=True)) for t in (nir.Affine, nir.Conv2d, nir.Flatten, nir.AvgPool2d)}
    node_map[nir.IF] = lambda n: snntorch.Leaky(beta=1.0, threshold=float(np.unique(n.v_threshold)[0]), reset_mechanism="subtract", init_hidden=True, reset_delay=False)
    net = nirtorch.nir_to_torch(graph, node_map)
    leaky = [m for m in net.modules() if isinstance(m, snntorch.Leaky)]
    T, n = 12, 6
    _, (x_test, _) = digits
    x = x_test[:n]
    xn = digits_snn.graph.normalize(x)  # the graph's input is the normalized image (metadata)
    theirs = torch.zeros(len(leaky), T)
    out_theirs = torch.zeros(n, 10)
    with torch.no_grad():
        for i in range(n):  # NIR shapes have no batch axis; snnTorch's Flatten(start_dim=0) needs unbatched samples
            for m in leaky:
                m.mem = torch.zeros(1)
            for t in range(T):
                seen = []
                hooks = [m.register_forward_hook(lambda mod, a, o: seen.append(o.sum())) for m in leaky]
                out, _ = net(xn[i])
                for h in hooks:
                    h.remove()
                theirs[:, t] += torch.stack(seen)
                out_theirs[i] += out
    ours_rule = load_nir(digits_nir)
    for name, module in list(ours_rule.graph.named_children()):
        if isinstance(module, IFNeurons):
            setattr(ours_rule.graph, name, _SnnTorchRuleNeurons())
    ours_rule.graph.recompile()
    ours_rule._runners.clear()
    rule_result, rule_counts = _neuron_counts(ours_rule, x, T)
    assert torch.equal(torch.stack(rule_counts).float(), theirs)
    assert torch.allclose(rule_result.outputs[T], out_theirs, atol=1e-4)
    _, own = _neuron_counts(load_nir(digits_nir), x, T)
    assert torch.equal(own[0].float(), theirs[0])  # first layer: analog input below 2, same spikes


def test_counting_a_nir_import_equals_counting_the_original(digits_snn, digits_nir, digits):
    _, (x_test, y_test) = digits
    totals = []
    for network in (digits_snn, load_nir(digits_nir)):
        with Analyzer(network, T=[4, 10], energy_models=["45nm-fp32", "loihi"]) as analyzer:
            analyzer.run(x_test[:40], y_test[:40])
            report = analyzer.report()
            per_layer = [float(layer.synaptic_acs.sum()) for layer in analyzer.counter.layers.values() if layer.role == "synaptic"]
        totals.append(([r.synaptic_acs for r in report.rows], [r.energy_pj["loihi"] for r in report.rows], per_layer))
    assert totals[0] == totals[1]
    assert totals[0][0][1] > totals[0][0][0]


def _sj_chain(snn, neuron_factory) -> nn.Sequential:
    """The converted digits SNN's layers as a SpikingJelly multi-step nn.Sequential."""
    from spikingjelly.activation_based import layer

    layers = []
    for _, module in snn.graph.named_modules():
        if isinstance(module, IFNeurons):
            layers.append(neuron_factory())
        elif isinstance(module, (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.Flatten)):
            layers.append(layer.SeqToANNContainer(module))
    return nn.Sequential(*layers)


def test_spikingjelly_if_network_counts_like_annsnn(digits_snn, digits):
    """An IF network given as a SpikingJelly module: same spikes and same SyOPs as annsnn's."""
    from spikingjelly.activation_based import functional, neuron

    _, (x_test, _) = digits
    chain = _sj_chain(digits_snn, lambda: neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode="m"))
    foreign = from_spikingjelly(chain, (1, 8, 8))
    xn = digits_snn.graph.normalize(x_test[:32])
    syops = []
    for network, inputs in ((digits_snn, x_test[:32]), (foreign, xn)):
        with Analyzer(network, T=[8]) as analyzer:
            analyzer.run(inputs)
            syops.append([float(layer.synaptic_acs.sum()) for layer in analyzer.counter.layers.values() if layer.role == "synaptic"])
    assert syops[0] == syops[1]
    functional.reset_net(chain)


def test_lif_leak_and_hard_reset_follow_spikingjelly(digits_snn, digits):
    """LIF (tau=2, decay_input, hard reset to 0) and PLIF chains: annsnn's spikes per layer
    and step equal SpikingJelly's own multi-step run."""
    from spikingjelly.activation_based import functional, neuron

    _, (x_test, _) = digits
    xn = digits_snn.graph.normalize(x_test[:12])
    T = 8
    for factory in (lambda: neuron.LIFNode(tau=2.0, step_mode="m"), lambda: neuron.ParametricLIFNode(init_tau=3.0, decay_input=False, v_reset=None, step_mode="m")):
        chain = _sj_chain(digits_snn, factory).eval()
        recorded = []
        hooks = [m.register_forward_hook(lambda mod, a, o: recorded.append(o.reshape(T, -1).sum(1))) for m in chain if type(m).__name__.endswith("Node")]
        with torch.no_grad():
            functional.reset_net(chain)
            chain(xn.unsqueeze(0).repeat(T, 1, 1, 1, 1))
        for h in hooks:
            h.remove()
        ours = list(simulate(from_spikingjelly(chain, (1, 8, 8)), xn, T, record_spikes=True).spike_counts.values())
        assert len(ours) == 4
        assert all(torch.equal(o.float(), r.float()) for o, r in zip(ours, recorded))
        assert sum(float(r.sum()) for r in recorded) > 0


def test_direct_training_checkpoint_is_weights_only_and_counts_its_own_spikes(tmp_path):
    from annsnn.zoo.direct import DirectConfig, direct_checkpoint, train_direct

    events = []
    config = DirectConfig(arch="digits_cnn", dataset="digits", T=3, epochs=1, train_samples=128, batch_size=64, test_samples=64)
    result = train_direct(config, events.append)
    assert [e.epoch_done for e in events] == [False, False, True] and events[-1].test_top1 == result.test_top1
    path = tmp_path / "direct.pt"
    torch.save(direct_checkpoint(config, result), path)
    payload = torch.load(path, weights_only=True)
    snn = network_from_direct(payload)
    from annsnn.data import load_dataset

    x = torch.stack([load_dataset("digits", "test")[i][0] for i in range(32)])
    with torch.no_grad():
        expected = result.model(x)
    got = simulate(snn, x, 3).outputs[3] / 3
    assert torch.allclose(got, expected, atol=1e-5)
    from annsnn.foreign_snn_files import load_foreign

    with pytest.raises(UsageError, match="not a NIR file"):  # --dt was ignored for a checkpoint that runs in its own steps
        load_foreign(str(path), dt=0.5)
    assert load_foreign(str(path)).meta == snn.meta


def test_export_refuses_what_nir_cannot_express_in_one_line(digits):
    (x_train, _), _ = digits
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(16, 10))
    snn, _ = ann_to_snn(model, [x_train[:64]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("max"), hybrid=True))
    with pytest.raises(UsageError) as info:
        to_nir(snn)
    message = str(info.value)
    assert "\n" not in message and message.startswith("NIR cannot express:")
    assert "SpikingMaxPool2d" in message and "GELU" in message


def test_per_step_corrections_are_refused(digits):
    """The default low-latency calibration adds a per-step bias to every IF layer: NIR's IF has none."""
    (x_train, _), _ = digits
    loaded = load_model(embedded_checkpoint())
    snn, _ = ann_to_snn(loaded.module, [x_train[:128]], input_shape=(1, 8, 8), options=ConversionOptions.low_latency(T=4, readout_delay=0))
    assert all(layer.step_bias is not None for layer in snn.neuron_layers().values())
    with pytest.raises(UsageError, match="per-step corrections step_bias"):
        to_nir(snn)


def test_residual_add_becomes_two_edges_and_rescale_a_scale_node(digits, small_residual_net):
    (x_train, _), (x_test, _) = digits
    snn, _ = ann_to_snn(small_residual_net, [x_train[:128]], input_shape=(1, 8, 8), options=ConversionOptions.plain(mode=parse_mode("max")))
    graph = to_nir(snn)
    into = {}
    for src, dst in graph.edges:
        into.setdefault(dst, []).append(src)
    assert max(len(v) for v in into.values()) == 2
    assert "Scale" in {type(n).__name__ for n in graph.nodes.values()}  # the Rescale synapse on the identity branch
    back = __import__("annsnn.nir_io", fromlist=["from_nir"]).from_nir(graph)
    assert torch.equal(simulate(snn, x_test[:16], 12).outputs[12], simulate(back, x_test[:16], 12).outputs[12])


def test_bad_nir_files_fail_with_one_line_and_exit_2(capsys, digits_nir, tmp_path):
    truncated = tmp_path / "truncated.nir"
    truncated.write_bytes(digits_nir.read_bytes()[:4000])
    unknown = tmp_path / "unknown.nir"
    unknown.write_bytes(digits_nir.read_bytes())
    with h5py.File(unknown, "r+") as f:
        node = f["node"]["nodes"]["features_10"]  # the layer as tables name it (features.10)
        del node["type"]
        node.create_dataset("type", data=b"Izhikevich")
    for path, text in ((truncated, "not a readable NIR file"), (unknown, "node type NIR (and annsnn) does not know")):
        code, out, err = run(capsys, "energy", "--model", str(path), "--data", "digits")
        assert code == 2 and text in err and err.count("\n") == 1 and "Traceback" not in err


def test_pickled_spikingjelly_needs_trust_and_unknown_neurons_are_refused(capsys, tmp_path):
    from spikingjelly.activation_based import layer, neuron

    net = nn.Sequential(layer.SeqToANNContainer(nn.Flatten(), nn.Linear(64, 10)), neuron.IFNode(step_mode="m"))
    path = tmp_path / "sj.pt"
    torch.save(net, path)
    code, _, err = run(capsys, "energy", "--model", str(path), "--data", "digits", "--input-shape", "1,8,8")
    assert code == 2 and "--trust" in err and err.count("\n") == 1
    code, out, err = run(capsys, "energy", "--model", str(path), "--data", "digits", "--input-shape", "1,8,8", "--trust", "--samples", "20", "--T", "4")
    assert code == 0, err
    odd = nn.Sequential(layer.SeqToANNContainer(nn.Flatten(), nn.Linear(64, 10)), neuron.IzhikevichNode(step_mode="m"))
    torch.save(odd, path)
    code, _, err = run(capsys, "energy", "--model", str(path), "--data", "digits", "--input-shape", "1,8,8", "--trust")
    assert code == 2 and "unknown neuron type IzhikevichNode" in err and err.count("\n") == 1


def test_export_cli_writes_a_nir_file_energy_reads_it(capsys, tmp_path, digits_snn):
    from annsnn import save_snn

    snn_path = tmp_path / "d.snn.pt"
    save_snn(digits_snn, snn_path)
    code, out, err = run(capsys, "export", str(snn_path), "--nir", str(tmp_path / "d.nir"))
    assert code == 0 and "4 IF" in out, err
    code, out, err = run(capsys, "energy", "--model", str(tmp_path / "d.nir"), "--T", "4", "--samples", "30", "--json", str(tmp_path / "e.json"))
    assert code == 0, err
    import json

    data = json.loads((tmp_path / "e.json").read_text())
    assert data["ann"]["top1"] is None and data["rows"][0]["synaptic_acs"] > 0


@pytest.mark.parametrize("kind, expected", [("IF", 5), ("LIF", 3)])
def test_foreign_nir_neurons_follow_nir_equations(kind, expected):
    """A constant current 0.6 into one neuron, 10 steps of dt=1 (forward Euler).
    IF (dv/dt = R I, strict threshold 1, reset to 0): v = 0.6, 1.2 -> spike, 0 ... : 5 spikes
    (annsnn's own subtracting IF would give floor(6) = 6). LIF (tau=2, R=2, v_leak=0):
    v = 0.6, 0.9, 1.05 -> spike, 0, ...: one spike every 3 steps, 3 spikes."""
    import nir

    one = np.ones(1, dtype=np.float32)
    neuron = nir.IF(r=one, v_threshold=one) if kind == "IF" else nir.LIF(tau=2 * one, r=2 * one, v_leak=0 * one, v_threshold=one)
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([1])}), "w": nir.Affine(weight=np.ones((1, 1), dtype=np.float32), bias=np.zeros(1, dtype=np.float32)),
               "n": neuron, "output": nir.Output(output_type={"output": np.array([1])})},
        edges=[("input", "w"), ("w", "n"), ("n", "output")],
    )
    from annsnn.nir_io import from_nir

    snn = from_nir(graph)
    result = simulate(snn, torch.full((1, 1), 0.6), 10)
    assert float(result.outputs[10]) == expected


def test_per_step_corrections_as_plain_attributes_are_refused_too(digits_snn):
    import copy

    snn = copy.deepcopy(digits_snn)
    first = next(iter(snn.neuron_layers().values()))
    first.step_bias = torch.zeros(3)
    with pytest.raises(UsageError, match="per-step corrections step_bias"):
        to_nir(snn)


def test_readout_delay_is_refused(digits):
    """A delayed readout changes the classes; NIR's output sums every step, so export refuses."""
    (x_train, _), _ = digits
    loaded = load_model(embedded_checkpoint())
    options = ConversionOptions.plain(mode=ConversionOptions.plain().mode, T=4, readout_delay=2)
    snn, _ = ann_to_snn(loaded.module, [x_train[:128]], input_shape=(1, 8, 8), options=options)
    assert all(layer.step_bias is None for layer in snn.neuron_layers().values())
    with pytest.raises(UsageError, match="readout delay"):
        to_nir(snn)
    snn.record = snn.record.replace(calibration=dataclasses.replace(snn.record.calibration, readout_delay=0))
    to_nir(snn)  # the same SNN without the delay exports


def test_a_dt_other_than_the_files_own_is_refused_for_annsnn_written_neurons(digits_nir):
    """'import-nir --dt 0.5' of a file annsnn wrote printed 'dt=0.5' while its IF neurons ran
    at the dt = 1 the file records: the same outputs, bit for bit, whatever --dt said."""
    load_nir(digits_nir, dt=1.0)
    with pytest.raises(UsageError, match="dt = 1"):
        load_nir(digits_nir, dt=0.5)
