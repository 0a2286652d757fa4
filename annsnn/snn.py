"""The converted network: an SNN graph plus the canonical ANN it came from."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import fx, nn

from .analog import AnalogOp, StaticAnalog
from .layers import IFNeurons, InputEncoder, TemporalModule, TimeExpand, SpikingMaxPool2d
from .opspec import OpRegistry, Role
from .record import SnnRecord
from .errors import UsageError

__all__ = ["SpikingNetwork", "Encoding", "SplitRunner", "static_nodes"]

Encoding = Literal["direct", "poisson", "events"]


@dataclass(frozen=True)
class SplitRunner:
    """A runner cut at its static boundary, for a run of several chunks on one batch.

    ``static(inputs)`` computes, once per batch, every value that is the same at every step
    (under ``direct`` encoding: the encoder and the layers fed by the image alone) and
    returns the ones the rest reads, as a tuple; ``temporal(*values)`` runs one chunk of K
    steps from them (``[K*B, ...]`` out). ``temporal(*static(x))`` is ``runner(x)``, op for
    op; only the static part no longer runs again for every chunk."""

    static: fx.GraphModule
    temporal: fx.GraphModule
    source: fx.GraphModule  # the runner it was cut from: a rebuilt runner gets a new split


class SpikingNetwork(nn.Module):
    """``graph`` runs on merged ``[K*B, ...]`` tensors; ``ann`` is the (BN-folded) ANN.

    ``record`` is the typed :class:`~annsnn.record.SnnRecord` (provenance, normalization,
    calibration, input shape, ...); a format-1 ``meta`` dict is accepted and validated into
    one. ``meta`` is the record as that flat dict, read-only (a fresh copy each time).
    ``registry`` is the op registry (:mod:`annsnn.ops`) it was converted or loaded with;
    counting and saving read its entries.
    """

    def __init__(self, graph: fx.GraphModule, ann: fx.GraphModule, record: SnnRecord | dict, *, registry: OpRegistry) -> None:
        super().__init__()
        self.graph = graph
        self.ann = ann
        self.record = record if isinstance(record, SnnRecord) else SnnRecord.from_meta(record)
        self.registry = registry
        self._runners: dict[str, fx.GraphModule] = {}
        self._split_runners: dict[str, SplitRunner] = {}

    @property
    def meta(self) -> dict:
        """The record as SNN format 1's flat dict (a copy: change ``record`` instead)."""
        return self.record.meta()

    def _modules_in_execution_order(self, kinds: tuple[type, ...]) -> dict[str, nn.Module]:
        """The graph's modules of ``kinds``, in the order the graph first calls them.
        Registration order (``named_modules``) can differ: canonicalization registers the
        module of a functional activation (a CIFAR ResNet's ``F.relu`` stem) after every
        module the model declared."""
        modules = dict(self.graph.named_modules())
        ordered: dict[str, nn.Module] = {}
        for node in self.graph.graph.nodes:
            if node.op == "call_module" and isinstance(modules.get(str(node.target)), kinds):
                ordered.setdefault(str(node.target), modules[str(node.target)])
        for name, module in modules.items():  # never called: listed after the rest
            if isinstance(module, kinds):
                ordered.setdefault(name, module)
        return ordered

    def neuron_layers(self) -> dict[str, IFNeurons]:
        """The IF layers, in execution (topological) order: layer-by-layer fits rely on it."""
        return self._modules_in_execution_order((IFNeurons,))  # type: ignore[return-value]

    def spike_sources(self) -> dict[str, nn.Module]:
        """Modules whose outputs are spikes: IF neurons and spiking max-pools, in execution order."""
        return self._modules_in_execution_order((IFNeurons, SpikingMaxPool2d))

    @property
    def encoder(self) -> InputEncoder:
        encoders = [m for m in self.graph.modules() if isinstance(m, InputEncoder)]
        assert len(encoders) == 1
        return encoders[0]

    def runner(self, encoding: Encoding) -> fx.GraphModule:
        """The graph prepared for ``encoding``: for ``direct``, everything computed from the
        image alone runs once per batch and is repeated over time (:class:`TimeExpand`)."""
        if encoding not in ("direct", "poisson", "events"):
            raise ValueError(f"unknown encoding {encoding!r}")
        if encoding not in self._runners:
            self._runners[encoding] = _build_runner(self.graph, encoding, self.registry)
        return self._runners[encoding]

    def split_runner(self, encoding: Encoding) -> SplitRunner:
        """:meth:`runner` split into its once-per-batch static part and its per-chunk part
        (:class:`SplitRunner`); both share the runner's modules."""
        runner = self.runner(encoding)
        split = self._split_runners.get(encoding)
        if split is None or split.source is not runner:
            split = self._split_runners[encoding] = _split_runner(runner, encoding)
        return split

    def temporal_modules(self, encoding: Encoding) -> list[TemporalModule]:
        runner = self.runner(encoding)
        return [m for m in runner.modules() if isinstance(m, TemporalModule)]

    def reset(self) -> None:
        """Start a new input: every membrane potential back to ``v_init``, every per-step bias
        back to step 1 (as SpikingJelly's ``functional.reset_net``)."""
        for encoding in ("direct", "poisson"):
            if encoding in self._runners:
                for module in self.temporal_modules(encoding):  # type: ignore[arg-type]
                    module.reset_state()
        for module in self.graph.modules():
            if isinstance(module, TemporalModule):
                module.reset_state()

    def forward(self, x: torch.Tensor, T: int | None = None, *, encoding: Encoding = "direct") -> torch.Tensor:
        """Run the SNN on ``x`` ``[B, *input_shape]`` (values as the ANN takes them), keeping
        the neurons' state from call to call until :meth:`reset`.

        * single step (``T=None``): one time step; returns that step's output current
          ``o_t`` ``[B, classes]``;
        * multi-step (``T=n``): n steps on the same input; returns ``[n, B, classes]``.

        The readout of :func:`annsnn.simulate` is the running sum of these outputs from the
        first step (``readout_delay=0``; with a delay k it starts after step d(T), see
        :func:`annsnn.simulate.readout_start`), and the two agree bit for bit::

            snn.reset()
            acc = snn(x)
            for _ in range(T - 1):
                acc = acc + snn(x)
            # acc == simulate(snn, x, T, readout_delay=0, chunk=1).outputs[T]

        (``simulate``'s default chunk merges steps into ``[K*B, ...]`` batches; where a CPU's
        kernels round by batch size, e.g. MKL's AVX2 matrix products, that readout agrees to
        float32 rounding instead.)

        Forward hooks on the IF layers (``snn.neuron_layers()``) see each step's spikes.
        """
        steps = 1 if T is None else int(T)
        if steps < 1:
            raise ValueError("T must be at least 1")
        runner = self.runner(encoding)
        for module in self.temporal_modules(encoding):
            module.steps = steps
        self.encoder.encoding = encoding
        out = runner(x)
        out = out.reshape(steps, int(x.shape[0]), *out.shape[1:])
        return out[0] if T is None else out


def static_nodes(graph: fx.Graph, modules: dict[str, nn.Module], encoding: Encoding) -> set[fx.Node]:
    """Nodes whose value is the same at every time step under ``encoding``."""
    static: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            static.add(node)
            continue
        if node.op == "output":
            continue
        if node.op == "call_module":
            mod = modules[str(node.target)]
            if isinstance(mod, InputEncoder):
                if encoding == "direct":
                    static.add(node)
                continue
            if isinstance(mod, TemporalModule) and not isinstance(mod, AnalogOp):
                continue  # an analog op on constant inputs is constant itself
        if all(a in static for a in node.all_input_nodes):
            static.add(node)
    return static


def _build_runner(graph_module: fx.GraphModule, encoding: Encoding, registry: OpRegistry) -> fx.GraphModule:
    graph = copy.deepcopy(graph_module.graph)
    root = nn.Module()
    for name, child in graph_module.named_children():
        root.add_module(name, child)
    runner = fx.GraphModule(root, graph)
    modules = dict(runner.named_modules())
    static = static_nodes(graph, modules, encoding)
    count = 0
    for node in list(graph.nodes):
        if node in static:
            if node.op == "call_module" and isinstance(modules[str(node.target)], AnalogOp):
                name = f"static_{str(node.target).replace('.', '_')}"
                runner.add_submodule(name, StaticAnalog(modules[str(node.target)]))  # f once per batch
                node.target = name
            continue
        if node.op == "call_module" and isinstance(modules[str(node.target)], InputEncoder):
            continue  # the encoder makes its own time axis
        sizes = [a for a in node.all_input_nodes if a in static and not _is_tensor_node(a, modules, registry)]
        if sizes:  # sizes other than the batch's were folded to constants when the model was canonicalized
            raise UsageError(f"the model reads its batch size ({sizes[0].name}) for {node.name}, which runs at every time step: annsnn runs "
                             "the steps as one batch of T x B, where that size no longer fits; reshape with -1 (h.view(h.size(0), -1), torch.flatten(h, 1)) and convert again")
        tensor_static = [a for a in node.all_input_nodes if a in static and _is_tensor_node(a, modules, registry)]
        for src in tensor_static:
            count += 1
            name = f"time_expand_{count}"
            runner.add_submodule(name, TimeExpand(copy=not (node.op == "call_module" and type(modules[str(node.target)]) is IFNeurons)))
            with graph.inserting_before(node):
                expanded = graph.call_module(name, (src,))
            node.replace_input_with(src, expanded)
    graph.lint()
    runner.recompile()
    return runner


def _split_runner(runner: fx.GraphModule, encoding: Encoding) -> SplitRunner:
    """Cut ``runner`` where static values (:func:`static_nodes`) are read by the rest."""
    graph = runner.graph
    static = static_nodes(graph, dict(runner.named_modules()), encoding)
    boundary = [n for n in graph.nodes if n in static and any(u not in static for u in n.users)]
    head = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in static:  # every placeholder is static: the head takes the runner's arguments
            env[node] = head.node_copy(node, lambda a: env[a])
    head.output(tuple(env[n] for n in boundary))
    tail = fx.Graph()
    env = {n: tail.placeholder(f"static_{n.name}") for n in boundary}
    for node in graph.nodes:
        if node not in static:
            env[node] = tail.node_copy(node, lambda a: env[a])
    return SplitRunner(fx.GraphModule(runner, head), fx.GraphModule(runner, tail), runner)


def _is_tensor_node(node: fx.Node, modules: dict[str, nn.Module], registry: OpRegistry) -> bool:
    """Whether ``node`` carries a tensor (an op whose registry role is SIZE reads sizes only)."""
    if node.op in ("call_method", "call_function"):
        spec = registry.lookup(node, modules)
        if spec is not None and spec.role is Role.SIZE:
            return False
    if node.op == "call_function" and getattr(node.target, "__name__", "") == "getitem":
        src = node.args[0]
        return isinstance(src, fx.Node) and _is_tensor_node(src, modules, registry)
    return True
