"""One evaluation path for the ANN and its SNN: accuracy at every T, and op counts.

``Analyzer`` is the library entry point for training scripts::

    with annsnn.Analyzer(snn, T=[5, 20, 50]) as a:
        for x, y in loader:
            a.run(x, y)
    result = a.report()          # AnalysisResult, a typed dataclass
    result.to_dict()             # JSON-ready (schema_version 1)

The ANN and the SNN see the same tensors in the same order, in eval mode.
Counts are totals over all samples; the report gives them per inference.
With ``count=False`` nothing is counted, and every count, SNN energy, ratio and
break-even T in the report is ``None`` ("not counted"), never 0; firing rates are
measured either way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from .counting import AnnCounts, SnnCounter, count_ann
from .energy import BreakEven, EnergyModel, ann_energy_pj, break_even, get_energy_models
from .record import reference_ann_note
from .errors import UsageError
from .metrics import check_label_range, classification_metrics, ranked_classes
from .modes import parse_time_steps
from .names import layer_label
from .simulate import simulate
from .snn import Encoding, SpikingNetwork

__all__ = ["Analyzer", "AnalysisResult", "AnnEnergy", "ann_energy", "layer_label", "AnnSummary", "AnnLayerSummary", "TimeStepRow", "LayerSummary", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
_COUNT_FIELDS = ("synaptic_acs", "macs", "bias_acs", "neuron_updates", "spikes", "active_updates", "comparisons")


@dataclass
class AnnSummary:
    top1: float | None
    recall_macro: float | None
    f1_macro: float | None
    macs: int  # padded positions excluded, as the SNN's SyOPs
    bias_adds: int
    energy_pj: dict[str, float | None]
    macs_with_padding: int = 0  # fvcore's raw count, multiplications by padded zeros included
    unsupported: dict[str, int] = field(default_factory=dict)  # ops fvcore has no count for
    top5: float | None = None  # with >= 10 classes
    confusion: list[list[int]] | None = None  # [label][prediction]


@dataclass
class AnnLayerSummary:
    """One ANN module's own ops and their energy per inference (memory included for
    ``NAME+sram``; a neuromorphic model's column is its ``ann_reference``'s)."""

    name: str
    type: str
    macs: int
    macs_with_padding: int
    bias_adds: int
    energy_pj: dict[str, float]


@dataclass
class TimeStepRow:
    T: int
    top1: float | None
    gap: float | None  # SNN top-1 minus ANN top-1
    agreement: float  # share of samples where SNN and ANN predict the same class
    recall_macro: float | None
    f1_macro: float | None
    firing_rate: float | None  # spikes per neuron per step, all layers (None: no IF layer)
    # per inference; None: not counted (Analyzer(count=False))
    synaptic_acs: float | None  # SyOPs
    macs: float | None
    bias_acs: float | None
    neuron_updates: float | None
    active_updates: float | None  # neuron updates with input or a spike (Loihi's active updates)
    comparisons: float | None  # spiking max-pool comparisons
    total_ops: float | None
    energy_pj: dict[str, float] | None
    energy_ratio: dict[str, float | None] | None  # SNN / ANN (a value is None without an ANN energy)
    seed_bound_pj: dict[str, list[float]] | None = None  # [low, high]; Poisson input only
    top5: float | None = None  # with >= 10 classes
    confusion: list[list[int]] | None = None  # [label][prediction]


@dataclass
class LayerSummary:
    name: str
    type: str
    role: str
    neurons: int
    firing_rate: float  # at max T
    synaptic_acs: float  # per inference at max T
    macs: float
    comparisons: float
    energy_pj: dict[str, float]  # per inference at max T, under every model (memory included for NAME+sram)


@dataclass
class AnalysisResult:
    schema_version: int
    samples: int
    encoding: str
    mac_counting: str
    seed: int
    time_steps: list[int]
    ann: AnnSummary
    rows: list[TimeStepRow]
    layers: list[LayerSummary]
    ann_layers: list[AnnLayerSummary]
    firing_rates: dict[str, dict[str, float]]  # layer -> {T: rate}
    break_even_T: dict[str, BreakEven] | None  # None: not counted
    energy_models: dict[str, dict]
    unsupported: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def energy_pj_counted(self) -> bool:
        """Whether every row has SNN energies (ops were counted)."""
        return all(row.energy_pj is not None for row in self.rows)

    @property
    def counted(self) -> bool:
        """Whether ops and energy were counted (``Analyzer(count=True)``)."""
        return self.break_even_T is not None

    def to_dict(self) -> dict:
        """JSON-ready: break-even T as ``{"kind", "T"}``, "not counted" as null."""
        data = asdict(self)
        data["break_even_T"] = None if self.break_even_T is None else {k: v.to_json() for k, v in self.break_even_T.items()}
        return data



def _dense_capacity(counter: SnnCounter, name: str) -> float:
    """Synaptic events per step if every input of a spike-fed layer spiked (its dense MACs)."""
    layer = counter.layers[name]
    module = counter.modules.get(name)
    if layer.role != "synaptic" or module is None or not layer.output_numel:
        return 0.0
    return float(counter.dense_macs(module, layer.input_shape))


def _metrics(pred: Tensor, labels: Tensor | None) -> tuple[float | None, float | None, float | None]:
    if labels is None:
        return None, None, None
    from sklearn.metrics import f1_score, recall_score

    y, p = labels.numpy(), pred.numpy()
    top1 = int((pred == labels).sum()) / len(labels)  # exact in float64, no float32 noise
    return top1, float(recall_score(y, p, average="macro", zero_division=0)), float(f1_score(y, p, average="macro", zero_division=0))


def _extra_metrics(pred: Tensor, labels: Tensor | None, classes: int, top5: Tensor) -> tuple[float | None, list[list[int]] | None]:
    """Top-5 (with >= 10 classes) and the confusion matrix, from :mod:`annsnn.metrics`."""
    if labels is None:
        return None, None
    m = classification_metrics(pred, labels, classes, top5)
    return m.top5, m.confusion


class Analyzer:
    """Accumulates predictions and op counts over batches; :meth:`report` summarises."""

    def __init__(
        self,
        snn: SpikingNetwork,
        T: Sequence[int] | str | int,
        *,
        encoding: Encoding = "direct",
        seed: int = 0,
        energy_models: Sequence[str | EnergyModel] = ("45nm-fp32",),
        count: bool = True,
        chunk: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.snn = snn.cpu().eval()
        self.time_steps = parse_time_steps(T if not isinstance(T, (list, tuple)) else list(T))
        self.encoding: Encoding = encoding
        if encoding not in ("direct", "poisson", "events"):
            raise UsageError(f"unknown encoding {encoding!r}: use direct, poisson or events")
        self.seed = int(seed)
        self.models = get_energy_models(energy_models)
        if not self.models:
            raise UsageError("give at least one energy model")
        if any(m.memory is not None for m in self.models) and not count:
            raise UsageError("memory-aware energy needs counting")
        self.chunk = chunk
        self.max_t = self.time_steps[-1]
        self.counter = SnnCounter(self.snn, encoding, self.max_t) if count else None  # analysed on CPU
        # counted before anything is simulated, so a model fvcore cannot count fails first
        self.ann_counts: AnnCounts = count_ann(self.snn.ann, tuple(self.snn.meta["input_shape"]))
        self.snn = self.snn.to(self.device)
        self.samples = 0
        self.num_classes = 0  # outputs of the network, set by run()
        self._records: dict[int, dict] = {}  # batch index -> predictions and labels
        self._spikes: dict[str, Tensor] = {}
        self._neurons: dict[str, int] = {}  # layer -> neurons per sample, when not counting
        self._next_index = 0

    def __enter__(self) -> "Analyzer":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.counter is not None:
            self.counter.detach()

    @torch.no_grad()
    def run(self, inputs: Tensor, labels: Tensor | None = None, batch_index: int | None = None) -> None:
        """Score one batch with both networks (same tensors, same order).

        ``batch_index`` orders the batches in the report (default: call order). Poisson
        spikes are drawn from a generator seeded by (seed, batch_index), so a sharded or
        resumed run gives exactly the numbers of an uninterrupted one.
        """
        assert not any(m.training for m in self.snn.modules()), "networks must be in eval mode"
        index = self._next_index if batch_index is None else int(batch_index)
        if index in self._records:
            raise UsageError(f"batch {index} was already analysed")
        batch = int(inputs.shape[0]) if inputs.dim() else 0
        if batch == 0:
            raise UsageError("the batch has no images")
        if inputs.dtype != torch.float32:
            raise UsageError(f"inputs are {str(inputs.dtype).removeprefix('torch.')}; the SNN takes float32 images (inputs.float(), scaled as for the ANN)")
        expected = tuple(self.snn.record.input_shape)
        given = tuple(inputs.shape[2:] if self.encoding == "events" else inputs.shape[1:])
        if expected and given != expected:  # the counts are built for the recorded shape
            raise UsageError(f"inputs of shape {list(given)} per image; the SNN was converted for {list(expected)}")
        if labels is not None and (labels.dim() != 1 or int(labels.shape[0]) != batch):
            raise UsageError(f"labels of shape {list(labels.shape)}: give one class index per image, shape [{batch}] "
                             "(a [B, 1] column: labels.view(-1); one-hot rows: labels.argmax(1))")
        self._next_index = max(self._next_index, index + 1)
        inputs = inputs.to(self.device)
        if self.encoding == "events":  # frames [B, F, ...]: the ANN sees their mean (annsnn.events)
            from .events import ann_view

            if inputs.dim() != len(self.snn.meta.get("input_shape", inputs.shape[2:])) + 2:
                raise UsageError("--encoding events needs event data: frames [B, T, C, H, W] (--data tonic:NAME)")
            ann_out = self.snn.ann(ann_view(inputs))
        else:
            ann_out = self.snn.ann(inputs)
        if ann_out.dim() != 2:  # argmax(1) of [N, C, 1] compares [N, 1] with [N] labels: N x N "matches"
            raise UsageError(f"the model's output has shape {list(ann_out.shape)}; annsnn scores a classifier's [batch, classes] output")
        if labels is not None:
            check_label_range(labels, int(ann_out.shape[1]))
        generator = torch.Generator(device=inputs.device).manual_seed(self.seed * 1_000_003 + index)
        if self.counter is not None:
            self.counter.attach(batch)
        try:
            result = simulate(
                self.snn, inputs, self.time_steps, encoding=self.encoding, generator=generator,
                chunk=self.chunk, record_spikes=self.counter is None, on_chunk=self.counter.on_chunk if self.counter else None,
            )
        finally:
            if self.counter is not None:
                self.counter.detach()
        self.samples += batch
        self.num_classes = int(ann_out.shape[1])
        self._records[index] = {
            "ann": ann_out.argmax(1).cpu(),
            "snn": {t: result.predictions(t).cpu() for t in self.time_steps},
            "labels": None if labels is None else labels.cpu().long(),
            "ann_top5": ranked_classes(ann_out).cpu(),
            "snn_top5": {t: ranked_classes(result.outputs[t]).cpu() for t in self.time_steps},
        }
        for name, counts in result.spike_counts.items():
            self._spikes[name] = self._spikes.get(name, torch.zeros_like(counts)) + counts
        self._neurons.update(result.neurons)

    # --- state: resume and multi-process merge ---------------------------------
    def state_dict(self) -> dict:
        """Everything accumulated so far (tensors, ints and dicts only)."""
        counter = {}
        if self.counter is not None:
            counter = {name: {attr: getattr(layer, attr).clone() for attr in _COUNT_FIELDS} for name, layer in self.counter.layers.items()}
        return {
            "samples": self.samples,
            "records": {i: {"ann": r["ann"], "snn": {str(t): p for t, p in r["snn"].items()}, "labels": r["labels"],
                            "ann_top5": r["ann_top5"], "snn_top5": {str(t): p for t, p in r["snn_top5"].items()}} for i, r in self._records.items()},
            "spikes": dict(self._spikes),
            "neurons": dict(self._neurons),
            "counter": counter,
            "counter_samples": self.counter.samples if self.counter is not None else 0,
        }

    def load_state_dict(self, state: dict) -> None:
        """Add a saved state (from :meth:`state_dict`, e.g. another process's) to this one."""
        for index, record in state["records"].items():
            if int(index) in self._records:
                raise UsageError(f"batch {index} appears twice")
            self._records[int(index)] = {"ann": record["ann"], "snn": {int(t): p for t, p in record["snn"].items()}, "labels": record["labels"],
                                         "ann_top5": record["ann_top5"], "snn_top5": {int(t): p for t, p in record["snn_top5"].items()}}
            self.num_classes = max(self.num_classes, int(record["ann_top5"].max()) + 1 if record["ann_top5"].numel() else 0)
            self._next_index = max(self._next_index, int(index) + 1)
        self.samples += int(state["samples"])
        for name, counts in state["spikes"].items():
            self._spikes[name] = self._spikes.get(name, torch.zeros_like(counts)) + counts
        self._neurons.update({str(k): int(v) for k, v in state.get("neurons", {}).items()})
        if self.counter is not None:
            for name, fields in state["counter"].items():
                layer = self.counter.layers[name]
                for attr in _COUNT_FIELDS:
                    getattr(layer, attr).add_(fields[attr])
            self.counter.samples += int(state["counter_samples"])

    def done_batches(self) -> set[int]:
        return set(self._records)

    # --- summary -------------------------------------------------------------
    def report(self) -> AnalysisResult:
        if self.samples == 0:
            raise UsageError("no samples were analysed")
        n = self.samples
        order = sorted(self._records)
        records = [self._records[i] for i in order]
        has_labels = all(r["labels"] is not None for r in records)
        labels = torch.cat([r["labels"] for r in records]) if has_labels else None
        ann_pred = torch.cat([r["ann"] for r in records])
        ann_top1, ann_recall, ann_f1 = _metrics(ann_pred, labels)
        classes = max(self.num_classes, int(labels.max()) + 1) if labels is not None else 0
        ann_extra = _extra_metrics(ann_pred, labels, classes, torch.cat([r["ann_top5"] for r in records]))
        ann_counts = self.ann_counts
        ann_layer_energy = self._ann_layer_energy(ann_counts)
        ann_energy: dict[str, float | None] = {m.name: sum(e[m.name] for e in ann_layer_energy.values()) for m in self.models}
        neurons = self._layer_neurons()
        total_neurons = sum(neurons.values())
        spike_counts = self._neuron_spikes()
        spikes_total = sum(spike_counts.values()) if spike_counts else torch.zeros(self.max_t, dtype=torch.float64)
        cum_spikes = torch.cumsum(spikes_total, 0)

        # cumulative per-step totals (over all samples)
        fields = ("synaptic_acs", "macs", "bias_acs", "neuron_updates", "active_updates", "comparisons")
        if self.counter is not None and self.counter.layers:
            layers = list(self.counter.layers.values())
            cum = {a: torch.cumsum(torch.stack([getattr(l, a) for l in layers]).sum(0), 0) / n for a in fields}
        else:
            cum = {a: torch.zeros(self.max_t, dtype=torch.float64) for a in fields}
        memory = {m.name: self._memory_energy(m, n) for m in self.models if m.memory is not None}
        energy_curve = {}
        for m in self.models:
            curve = [m.snn_energy_pj(**{a: float(cum[a][i]) for a in fields}) for i in range(self.max_t)]
            if m.name in memory:
                mem_cum = torch.cumsum(sum(memory[m.name].values(), torch.zeros(self.max_t, dtype=torch.float64)), 0)
                curve = [e + float(mem_cum[i]) for i, e in enumerate(curve)]
            energy_curve[m.name] = curve

        rows = []
        for t in self.time_steps:
            pred = torch.cat([r["snn"][t] for r in records])
            top1, recall, f1 = _metrics(pred, labels)
            i = t - 1
            energy = {name: curve[i] for name, curve in energy_curve.items()}
            bound = self._seed_bound(t) if self.encoding == "poisson" and self.counter is not None else None
            ratio = {name: (energy[name] / ann_energy[name] if ann_energy[name] else None) for name in energy}
            c: dict[str, float | None] = {a: float(cum[a][i]) for a in fields}
            if self.counter is None:  # not counted: None, never 0
                c = {a: None for a in fields}
                energy, ratio = None, None  # type: ignore[assignment]
            extra = _extra_metrics(pred, labels, classes, torch.cat([r["snn_top5"][t] for r in records]))
            rows.append(
                TimeStepRow(
                    T=t, top1=top1, gap=(top1 - ann_top1) if top1 is not None and ann_top1 is not None else None,
                    agreement=int((pred == ann_pred).sum()) / len(pred), recall_macro=recall, f1_macro=f1,
                    firing_rate=float(cum_spikes[i]) / (total_neurons * t * n) if total_neurons else None,
                    synaptic_acs=c["synaptic_acs"], macs=c["macs"], bias_acs=c["bias_acs"],
                    neuron_updates=c["neuron_updates"], active_updates=c["active_updates"], comparisons=c["comparisons"],
                    total_ops=None if self.counter is None else sum(c[a] for a in ("synaptic_acs", "macs", "bias_acs", "neuron_updates", "comparisons")),  # type: ignore[misc]
                    energy_pj=energy, energy_ratio=ratio, seed_bound_pj=bound, top5=extra[0], confusion=extra[1],
                )
            )
        firing = {}
        for name, counts in spike_counts.items():
            size = neurons.get(name, 0)
            if not size:
                continue  # a layer with no neurons has no rate
            cum_layer = torch.cumsum(counts, 0)
            firing[name] = {str(t): float(cum_layer[t - 1]) / (size * t * n) for t in self.time_steps}
        layer_rows = self._layer_rows(n, memory)
        breaks: dict[str, BreakEven] | None = None
        if self.counter is not None:
            breaks = {model.name: break_even(energy_curve[model.name], ann_energy[model.name]) for model in self.models}
        has_memory = bool(memory)
        notes = [
            "counts are per inference; energies are compute-only estimates (no memory traffic)" if not has_memory
            else "counts are per inference; NAME+sram models add memory accesses (SRAM by size after Lemaire et al. 2022, DRAM beyond the on-chip capacity), the others are compute-only",
            "ANN MACs and SyOPs exclude padded positions (real work); ann.macs_with_padding is fvcore's raw count",
            "first-layer MACs are counted once per sample (constant direct input)" if self.encoding == "direct"
            else "Poisson input spikes drive the first layer with ACs (SyOPs), one bias AC per output per step" if self.encoding == "poisson"
            else "event input: every recorded event is a spike driving the first layer with ACs (SyOPs), one bias AC per output per step; the ANN sees the frames' mean",
        ]
        if self.encoding == "poisson" and self.counter is not None:
            notes.append("seed_bound_pj: the bound of an earlier, unpublished project report [T E_MAC O_MAC, T (E_AC O_AC + E_MAC O_MAC)] (O_MAC = the input layer's dense MACs, O_AC = every other spike-fed synapse active); shown for Poisson input only")
        changed = reference_ann_note(self.snn.record)
        if changed:
            notes.append(changed)
        if ann_counts.unsupported:
            notes.append("ANN ops without a count (fvcore): " + ", ".join(f"{k} x{v}" for k, v in sorted(ann_counts.unsupported.items())))
        for model in self.models:
            if model.kind != "digital":
                notes.append(f"{model.name}: ANN energy and ratio use {model.ann_reference} (an ANN does not run on {model.name})")
            if not model.verified:
                notes.append(f"{model.name}: UNVERIFIED: {model.note}")
        ann_layers = [
            AnnLayerSummary(layer.name, layer.type, layer.macs, layer.macs_with_padding, layer.bias_adds, ann_layer_energy[layer.name])
            for layer in ann_counts.layers
        ]
        return AnalysisResult(
            schema_version=SCHEMA_VERSION, samples=n, encoding=self.encoding,
            mac_counting="once per sample" if self.encoding == "direct" else "none (Poisson spikes: ACs)" if self.encoding == "poisson" else "none (event spikes: ACs)",
            seed=self.seed, time_steps=list(self.time_steps),
            ann=AnnSummary(ann_top1, ann_recall, ann_f1, ann_counts.macs, ann_counts.bias_adds, ann_energy, ann_counts.macs_with_padding, dict(ann_counts.unsupported), top5=ann_extra[0], confusion=ann_extra[1]),
            rows=rows, layers=layer_rows, ann_layers=ann_layers, firing_rates=firing, break_even_T=breaks,
            energy_models={m.name: m.to_dict() for m in self.models},
            unsupported=list(self.counter.unsupported) if self.counter else [], notes=notes,
        )

    def _layer_neurons(self) -> dict[str, int]:
        """Neurons per sample of each IF layer: the counter's when it counts, otherwise what
        the simulation saw."""
        if self.counter is None:
            return dict(self._neurons)
        return {name: int(self.counter.layers[name].neurons) for name in self.snn.neuron_layers() if name in self.counter.layers}

    def _neuron_spikes(self) -> dict[str, Tensor]:
        """Spikes per step of each IF layer (summed over samples): the counter's when it counts,
        otherwise what the simulation recorded; never both, the hook runs once per step."""
        if self.counter is None:
            return self._spikes
        return {name: self.counter.layers[name].spikes for name in self.snn.neuron_layers() if name in self.counter.layers}

    def _seed_bound(self, T: int) -> dict[str, list[float]]:
        """An earlier, unpublished project report's E in [T E_MAC O_MAC, T (E_AC O_AC + E_MAC O_MAC)], with O_MAC the
        dense MACs of the layers fed by the input and O_AC the synaptic capacity per step of
        the other spike-fed layers (every synapse active)."""
        assert self.counter is not None
        o_mac = self.counter.input_layer_macs()
        inputs = set(self.counter.input_layers())
        o_ac = sum(_dense_capacity(self.counter, name) for name in self.counter.layers if name not in inputs)
        out = {}
        for model in self.models:
            if model.kind == "digital" and model.memory is None:
                assert model.e_mac_pj is not None
                out[model.name] = [T * model.e_mac_pj * o_mac, T * (model.e_ac_pj * o_ac + model.e_mac_pj * o_mac)]
        return out

    def _sizes(self) -> dict[str, tuple[int, int, int, int]]:
        """Weight layers of the SNN graph: name -> (weights, inputs, outputs, dense MACs) per sample."""
        assert self.counter is not None
        out = {}
        for name, layer in self.counter.layers.items():
            module = self.counter.modules.get(name)
            if layer.weight_numel and module is not None:
                out[name] = (layer.weight_numel, layer.input_numel, layer.output_numel, self.counter.dense_macs(module, layer.input_shape))
        return out

    def _memory_energy(self, model: EnergyModel, n: int) -> dict[str, Tensor]:
        """SNN memory energy per layer and per step, per inference (pJ), under ``model.memory``.

        Accesses of ``w = model.value_bytes`` bytes, each priced by the size of the tensor it
        lives in (``access(numel * w, w)``): a synaptic event reads a weight and reads and
        writes the target potential; a bias AC reads and writes a potential; an analog MAC
        reads a weight and an input, each full evaluation writes its outputs; a neuron update
        reads and writes its potential. On a neuron layer, its per-step bias ACs and lateral
        synaptic events (the STDP network's inhibition, one constant weight) read and write
        the potential; that weight's read is not charged. Max-pool comparisons are charged
        compute only.
        """
        assert self.counter is not None and model.memory is not None
        memory, width = model.memory, model.value_bytes

        def access(numel: float) -> float:
            return memory.access_pj(numel * width, width)

        sizes = self._sizes()
        out: dict[str, Tensor] = {}
        for name, layer in self.counter.layers.items():
            per_step = torch.zeros(self.max_t, dtype=torch.float64)
            if layer.role == "neurons" and layer.neurons:
                # each update, each bias AC (a per-step bias) and each lateral event (STDP's
                # inhibition) reads and writes a potential
                per_step += (layer.neuron_updates + layer.bias_acs + layer.synaptic_acs) * 2 * access(layer.neurons)
            elif name in sizes:
                weights, inputs, outputs, dense = sizes[name]
                e_w, e_in, e_out = access(weights), access(inputs), access(outputs)
                per_step += layer.synaptic_acs * (e_w + 2 * e_out) + layer.bias_acs * 2 * e_out
                if dense:
                    per_step += layer.macs * (e_w + e_in + e_out * outputs / dense)
            elif layer.role == "synaptic":  # identity synapse into a neuron layer
                target = self.counter.layers.get(layer.feeds) if layer.feeds is not None else None
                size = target.neurons if target is not None and target.neurons else 1
                per_step += layer.synaptic_acs * 2 * access(size)
            out[name] = per_step / n
        return out

    def _ann_layer_energy(self, counts: AnnCounts) -> dict[str, dict[str, float]]:
        """Each ANN row's energy per inference under every model: compute under the model
        (a neuromorphic model's ``ann_reference``), plus, for ``NAME+sram``, every MAC reading
        a weight and an input and every output written once."""
        sizes = self._sizes() if self.counter is not None else {}
        out: dict[str, dict[str, float]] = {}
        for layer in counts.layers:
            energies = {}
            for model in self.models:
                energy = ann_energy_pj(model, layer.macs, layer.bias_adds)
                if model.memory is not None and layer.name in sizes:
                    weights, inputs, outputs, _ = sizes[layer.name]
                    w = model.value_bytes
                    access = lambda numel: model.memory.access_pj(numel * w, w)  # noqa: E731
                    energy += layer.macs * (access(weights) + access(inputs)) + outputs * access(outputs)
                energies[model.name] = energy
            out[layer.name] = energies
        return out

    def _layer_rows(self, n: int, memory: dict[str, dict[str, Tensor]]) -> list[LayerSummary]:
        if self.counter is None:
            return []
        rows = []
        for name, layer in self.counter.layers.items():
            counts = {a: float(getattr(layer, a).sum()) / n for a in ("macs", "synaptic_acs", "bias_acs", "neuron_updates", "active_updates", "comparisons")}
            energies = {}
            for model in self.models:
                energy = model.snn_energy_pj(**counts)
                if model.name in memory:
                    energy += float(memory[model.name][name].sum())
                energies[model.name] = energy
            rate = float(layer.spikes.sum()) / (layer.neurons * self.max_t * n) if layer.neurons else 0.0
            rows.append(LayerSummary(name, layer.type, layer.role, int(layer.neurons), rate, counts["synaptic_acs"], counts["macs"], counts["comparisons"], energies))
        return rows


@dataclass(frozen=True)
class AnnEnergy:
    """An ANN alone (``annsnn energy --ann``): its MACs and compute energy per inference.

    ``energy_pj[m] = E_MAC MACs + E_AC bias_adds`` under ``m``, or under ``references[m]`` for
    a neuromorphic ``m`` (:func:`annsnn.energy.ann_energy_pj`). A memory-aware ``NAME+sram``
    model needs the layer sizes a simulation records: it is listed in ``not_computed``
    with the reason, never priced 0."""

    macs: int
    macs_with_padding: int
    bias_adds: int
    unsupported: dict[str, int]
    energy_pj: dict[str, float]
    references: dict[str, str]
    energy_models: dict[str, dict]
    not_computed: dict[str, str]

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "ann": {"macs": self.macs, "macs_with_padding": self.macs_with_padding, "unsupported": dict(self.unsupported),
                                                          "bias_adds": self.bias_adds, "energy_pj": dict(self.energy_pj)},
                "energy_models": dict(self.energy_models), "references": dict(self.references), "not_computed": dict(self.not_computed)}


ANN_MEMORY_REASON = "memory traffic needs the layer sizes of a simulation: 'annsnn energy SNN' reports the ANN under it"


def ann_energy(module: torch.nn.Module, input_shape: tuple[int, ...], energy_models: Sequence[str | EnergyModel]) -> AnnEnergy:
    """MACs (fvcore, padded positions excluded) and compute energy of ``module`` alone."""
    models = get_energy_models(energy_models)
    skipped = [m.name for m in models if m.memory is not None]
    if models and len(skipped) == len(models):
        raise UsageError(f"--ann: {', '.join(skipped)} needs the layer sizes of a simulation; run 'annsnn energy SNN', whose report gives the ANN under it too, or pick a compute model")
    models = [m for m in models if m.memory is None]
    counts = count_ann(module, tuple(input_shape))
    return AnnEnergy(
        counts.macs, counts.macs_with_padding, counts.bias_adds, dict(counts.unsupported),
        {m.name: ann_energy_pj(m, counts.macs, counts.bias_adds) for m in models},
        {m.name: m.ann_reference for m in models if m.kind != "digital"},
        {m.name: m.to_dict() for m in models}, {name: ANN_MEMORY_REASON for name in skipped},
    )
