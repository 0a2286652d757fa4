"""Layer-major simulation: every step of one temporal layer, then the next layer.

:func:`~annsnn.simulate.simulate` is step-major: at each step every layer runs, so the
membrane state of *all* layers is live at once (on the shared ResNet-20, 256 images:
195 MB of float32 potentials). A calibration pass that needs every image at every step
(:func:`annsnn.calibration.fit_step_bias` reads per-channel statistics over all images
before it sets a step's bias) pays that for the whole run. In a feedforward graph, a layer
at step t depends only on its inputs at step t and its own state, so the same dynamics can
run layer by layer (the issue's "cache each layer's input spikes rather than re-simulating
the whole prefix"): layer l runs steps 1..N from the cached spike trains of the layers it
reads, and its own train is cached for the layers after it. Live state is one layer's
potentials plus the cached trains still to be read. A layer that reads a train of its own
size for the last time (a residual add: the block's input) writes its train over it, step
t over step t, once step t's inputs are read. The large buffers come from a
:class:`BufferPool` and are reused from layer to layer.

Spike trains are exactly 0/1, so they are cached as packed bits (``numpy.packbits``: 1 bit
per neuron and step, 1/32 of float32); burst neurons' counts (``max_spikes`` > 1) are cached
as they are. Outputs of other temporal modules (analog ops of
hybrid nets) are cached as they are. A train is dropped as soon as the last layer that
reads it has run.

Each temporal module is called once per step with a ``[B, ...]`` input (``steps = 1``),
as ``simulate(..., chunk=1)`` calls it; only the order of calls differs. The stateless ops
between two temporal layers run ``batch`` images at a time. With ``batch >= B`` every
value equals the step-major run's bit for bit; with smaller spans each equals a step-major
run of that span (tests check both), and the two differ only where a convolution or
matmul rounds differently for another batch size, as ``simulate`` itself does.
"""
from __future__ import annotations

import math
import mmap
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor, fx, nn

from .free_heap import heap_reuse, release_free_heap
from .graph import mutates_first_argument
from .layers import InputEncoder, TemporalModule, TimeExpand
from .snn import SpikingNetwork, static_nodes

__all__ = ["run_layerwise", "PackedSpikes", "BufferPool", "LayerStep", "call_module"]


LayerStep = Callable[[str, nn.Module, Tensor, int], Tensor]  # (name, module, x_t, t) -> output; x_t is read only (it may be a cached value)


def call_module(name: str, module: nn.Module, x: Tensor, t: int) -> Tensor:
    """The default :data:`LayerStep`: the module's own forward on step t's input."""
    return module(x)


class BufferPool:
    """Host buffers reused within one layer-major run.

    The large arrays of a run (each layer's spike train, its input buffer and, in the bias
    fit, its potentials) live for a layer or a few, and each is about as large as the one
    before it. Allocated afresh per layer, the C allocator places them between the run's
    small, short-lived tensors and cannot always reuse the hole a freed one leaves: on the
    shared ResNet-20 (N = 32, 256 images) the heap held as much free memory as live data.
    A buffer given back is handed out again for the next request it can hold (the smallest
    such), so after the first layers a run allocates no large array. CPU only: other
    devices have their own caching allocators.
    """

    def __init__(self) -> None:
        self._free: list[Tensor] = []  # uint8, 1-D
        self._lent: dict[int, Tensor] = {}  # data_ptr of a lent view -> its buffer

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
        """An uninitialised tensor of ``shape`` and ``dtype`` (a fresh one off the CPU)."""
        if torch.device(device).type != "cpu":
            return torch.empty(shape, dtype=dtype, device=device)
        nbytes = math.prod(shape) * dtype.itemsize
        fits = [b for b in self._free if b.numel() >= nbytes]
        if fits:
            buffer = min(fits, key=lambda b: b.numel())
            self._free = [b for b in self._free if b is not buffer]
        else:  # its own mapping, outside the heap the run's small tensors churn in; unmapped when the last view dies
            buffer = torch.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype=torch.uint8)
        view = buffer[:nbytes].view(dtype).view(shape)
        self._lent[view.data_ptr()] = buffer
        return view

    def give(self, tensor: Tensor) -> None:
        """Return a tensor from :meth:`take`; it must not be used afterwards (others are ignored)."""
        buffer = self._lent.pop(tensor.data_ptr(), None)
        if buffer is not None:
            self._free.append(buffer)


@dataclass(frozen=True)
class PackedSpikes:
    """A train of 0/1 tensors ``[B, ...]``, one per step, stored as bits: ``bits[t, b]`` holds
    image b's neurons at step t, 8 per byte (one buffer for the whole train)."""

    bits: Tensor  # uint8 [steps, B, ceil(neurons per image / 8)]
    shape: tuple[int, ...]  # one step's shape [B, ...]
    dtype: torch.dtype  # what :meth:`load` gives back
    device: torch.device = torch.device("cpu")  # where :meth:`load` gives it (the bits stay in host memory)

    @staticmethod
    def bits_shape(steps: int, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``[steps, B, ceil(neurons per image / 8)]`` for a train of ``[B, ...]`` steps."""
        return (steps, shape[0], -(-math.prod(shape[1:]) // 8))

    @staticmethod
    def empty(steps: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu", pool: BufferPool | None = None) -> "PackedSpikes":
        size = PackedSpikes.bits_shape(steps, shape)
        bits = pool.take(size, torch.uint8) if pool is not None else torch.empty(size, dtype=torch.uint8)
        return PackedSpikes(bits, tuple(shape), dtype, torch.device(device))

    def store(self, t: int, spikes: Tensor) -> None:
        flags = spikes if spikes.dtype == torch.bool else spikes.to(torch.bool)  # nonzero, as != 0, but 5x faster on CPU
        self.bits[t] = torch.from_numpy(np.packbits(flags.reshape(self.shape[0], -1).cpu().numpy(), axis=-1))

    def load(self, t: int, start: int, stop: int) -> Tensor:
        """Step t of images ``start .. stop-1``."""
        bits = np.unpackbits(self.bits[t, start:stop].numpy(), axis=-1, count=math.prod(self.shape[1:]))
        return torch.from_numpy(bits).to(self.device).to(self.dtype).reshape(stop - start, *self.shape[1:])


def _donor(trains: dict, boundary: set, read_later: set, steps: int, shape: tuple[int, ...]) -> "PackedSpikes | None":
    """A spike train this layer reads for the last time and whose buffer fits the layer's own
    train exactly: step t of the layer's output can overwrite step t of that input, which
    no one reads after the layer's step t (all of a step's inputs are read before the layer
    runs it). Saves one train per residual add, where the block's input and its branch end."""
    size = PackedSpikes.bits_shape(steps, shape)
    for node in sorted(boundary, key=lambda n: n.name):
        cached = trains.get(node)
        if node not in read_later and isinstance(cached, PackedSpikes) and tuple(cached.bits.shape) == size:
            return cached
    return None


@dataclass(frozen=True)
class _Plan:
    """What one temporal layer (or the graph output) computes at each step: the stateless
    ``order`` (topological), from the ``boundary`` values (static values and cached
    trains); ``drops``: after running a node, the values no later node of the plan reads."""

    order: list[fx.Node]
    boundary: frozenset[fx.Node]
    drops: dict[fx.Node, list[fx.Node]]


def _plan(nodes: list[fx.Node], target: fx.Node, stops: Callable[[fx.Node], bool]) -> _Plan:
    between: set[fx.Node] = set()
    boundary: set[fx.Node] = set()
    todo = list(target.all_input_nodes)
    while todo:
        node = todo.pop()
        if stops(node):
            boundary.add(node)
        elif node not in between:
            between.add(node)
            todo.extend(node.all_input_nodes)
    order = [n for n in nodes if n in between]
    position = {n: i for i, n in enumerate(order)}
    drops: dict[fx.Node, list[fx.Node]] = {}
    for node in boundary | between:  # drop a value once the last node here that reads it has run
        readers = [position[u] for u in node.users if u in position]
        if readers and node not in target.all_input_nodes:
            drops.setdefault(order[max(readers)], []).append(node)
    return _Plan(order, frozenset(boundary), drops)


def _shared_values(plan: _Plan, later: dict[fx.Node, _Plan], nodes: list[fx.Node], stops: Callable[[fx.Node], bool], refused: set[fx.Node]) -> set[fx.Node]:
    """The stateless values of ``plan`` that the ``later`` plans (by their target) would
    compute again, and would read directly once cached (not only through another such
    value). Only values worth caching: each is computed through at least one module (a
    convolution, say: not a mere view); ``refused`` ones are left out."""
    recomputed: set[fx.Node] = set().union(*(p.order for p in later.values())) if later else set()
    inside = set(plan.order)

    def costly(node: fx.Node) -> bool:
        seen, todo = {node}, [node]
        while todo:
            n = todo.pop()
            if n.op == "call_module":
                return True
            for m in n.all_input_nodes:
                if m in inside and m not in seen:
                    seen.add(m)
                    todo.append(m)
        return False

    shared = {n for n in plan.order if n in recomputed and n not in refused and costly(n)}
    if not shared:
        return shared
    trial = [_plan(nodes, target, lambda n: stops(n) or n in shared) for target in later]
    return {n for n in shared if any(n in p.boundary for p in trial)}


def _train_bytes(train: "PackedSpikes | list[Tensor] | Tensor") -> int:
    if isinstance(train, PackedSpikes):
        return train.bits.numel()
    if isinstance(train, Tensor):
        return train.numel() * train.element_size()
    return sum(x.numel() * x.element_size() for x in train)


@heap_reuse()
@torch.no_grad()
def run_layerwise(snn: SpikingNetwork, images: Tensor, steps: int, *, batch: int = 64, layer_step: LayerStep = call_module, pool: BufferPool | None = None, output_step: Callable[[int, Tensor], None] | None = None,
                  layer_prepass: Callable[[str, nn.Module, Tensor, int], None] | None = None) -> None:
    """Run ``snn`` on ``images`` (direct input) for ``steps`` steps, layer by layer.

    For each temporal layer in topological order and each step t = 0 .. steps-1, its input
    ``x_t`` (``[B, ...]``, all images) is computed from the cached outputs of the layers
    it reads, ``batch`` images at a time (bounded memory), and handed to
    ``layer_step(name, module, x_t, t)``, which returns the layer's step-t output (default:
    ``module(x_t)`` with ``module.steps = 1``; a spike layer may return it as bool). A layer
    with more than one input (an analog op) runs its own forward on all images at once.
    The graph output is computed only for ``output_step(t, out_t)``, called for t = 0 ..
    steps-1 after the last layer has run (``out_t`` for all images, the stateless ops
    after the last layers run ``batch`` images at a time); callers observe the rest of the
    run through ``layer_step`` or forward hooks. State is
    reset before and after, and each layer's once its steps are done. Spike trains and
    input buffers come from ``pool`` (a new :class:`BufferPool` if none), which a caller
    can share for its own per-layer arrays.

    ``layer_prepass`` (optional): before a layer with one input runs its steps, its inputs
    ``x_t`` for t = 0 .. steps-1 are computed the same way and handed to
    ``layer_prepass(name, module, x_t, t)``, which returns nothing; then the layer runs. A
    caller can so read every step of a layer's input before its first output (the
    constant bias of :func:`annsnn.calibration.fit_layer_bias`), at the price of computing
    the layer's inputs twice.

    A stateless value that later layers would compute again (a linear-bottleneck stream
    ``r_k = r_(k-1) + p_k(s_k)``: MobileNetV2's, read by block k+1's expansion and again
    by ``r_(k+1)``) is cached by its first reader as a float train ``[steps, B, ...]``
    when the cached values together are no larger than the largest train the run has
    cached so far; later layers read it from there, so each is computed once per step.
    The same ops run on the same spans, so no value changes. Not cached: off the CPU
    (host trains only; recomputing is cheap on a GPU), in a graph with an op after the
    static part that writes into a tensor it reads (in place, or with ``out=``: it could
    write into a cached value through a view), or when a layer with several inputs
    (computed over all images) shares a run split into spans. Every train goes back to
    ``pool`` when the run ends.
    """
    pool = BufferPool() if pool is None else pool
    release_free_heap()  # what earlier passes freed: the run's buffers should not sit on top of it
    runner = snn.runner("direct")
    graph = runner.graph
    nodes = list(graph.nodes)
    modules = dict(runner.named_modules())
    static = static_nodes(graph, modules, "direct")
    spike_sources = set(snn.spike_sources().values())
    total = int(images.shape[0])
    batch = max(1, min(int(batch), total))

    def is_layer(node: fx.Node) -> bool:
        if node.op != "call_module" or node in static:
            return False
        mod = modules[str(node.target)]
        return isinstance(mod, TemporalModule) and not isinstance(mod, (TimeExpand, InputEncoder))

    layers = [n for n in nodes if is_layer(n)]
    output = next(n for n in nodes if n.op == "output")
    targets = layers + ([output] if output_step is not None else [])
    cached: set[fx.Node] = set()  # stateless values held as float trains: boundaries of the plans after their first reader

    def stops(node: fx.Node) -> bool:
        return node in static or is_layer(node) or node in cached

    plans = {target: _plan(nodes, target, stops) for target in targets}
    read_static = {n for p in plans.values() for n in p.boundary if n in static}
    spans = [(lo, min(lo + batch, total)) for lo in range(0, total, batch)]
    writes = any(n not in static and ((n.args and isinstance(n.args[0], fx.Node) and mutates_first_argument(n, modules)) or n.kwargs.get("out") is not None)
                 for n in nodes)  # an op that writes into a tensor it reads: in place, or through out=
    may_cache = images.device.type == "cpu" and not writes and (len(spans) == 1 or all(len(layer.all_input_nodes) == 1 for layer in layers))

    temporal = [m for m in runner.modules() if isinstance(m, TemporalModule)]
    for module in temporal:
        module.reset_state()
        module.steps = 1
    snn.encoder.encoding = "direct"
    interpreter = fx.Interpreter(runner)
    fixed: dict[tuple[int, int], dict[fx.Node, object]] = {}  # per image span: the static values read later
    trains: dict[fx.Node, PackedSpikes | list[Tensor] | Tensor] = {}  # layer (or cached value) -> its output at every step
    largest = 0  # bytes of the largest train cached so far: the bound on the cached stateless values' (together)
    storing: dict[fx.Node, Tensor] = {}  # the current layer's shared values -> their trains [steps, B, ...], being filled
    refused: set[fx.Node] = set()  # shared values over that bound: recomputed by each reader

    def static_values(span: tuple[int, int]) -> dict[fx.Node, object]:
        if span not in fixed:
            env: dict[fx.Node, object] = {}
            interpreter.env = env
            for node in graph.nodes:  # as the runner does: everything static, once per batch
                if node in static and node.op != "output":
                    env[node] = images[span[0] : span[1]] if node.op == "placeholder" else interpreter.run_node(node)
            fixed[span] = {n: v for n, v in env.items() if n in read_static}
        return fixed[span]

    def inputs_at(layer: fx.Node, span: tuple[int, int], t: int) -> dict[fx.Node, object]:
        """The values of ``layer``'s inputs (and the stateless nodes before them) at step t
        for images ``span``: from static values and cached trains."""
        values = static_values(span)
        env: dict[fx.Node, object] = {}
        plan = plans[layer]
        for node in plan.boundary:
            if node in values:
                env[node] = values[node]
            else:
                cached = trains[node]
                env[node] = cached.load(t, *span) if isinstance(cached, PackedSpikes) else cached[t][span[0] : span[1]]
        interpreter.env = env
        for node in plan.order:
            env[node] = interpreter.run_node(node)
            if node in sharing:
                keep(node, env[node], span, t)
            for value in plan.drops.get(node, ()):  # bounded temporaries: an op's inputs go once read for the last time
                del env[value]
        return env

    def keep(node: fx.Node, value: object, span: tuple[int, int], t: int) -> None:
        """Store a shared value of the current layer's plan into its train; its first
        value (step 0, first span) decides whether it is cached at all."""
        if node not in storing:
            if node in refused:
                return
            fits = isinstance(value, Tensor) and value.dim() >= 1 and int(value.shape[0]) == span[1] - span[0]
            held = sum(_train_bytes(trains[n]) for n in cached if n in trains) + sum(_train_bytes(b) for b in storing.values())
            if not fits or held + steps * total * math.prod(value.shape[1:]) * value.element_size() > largest:  # type: ignore[union-attr]
                refused.add(node)
                return
            storing[node] = pool.take((steps, total, *value.shape[1:]), value.dtype, value.device)  # type: ignore[union-attr]
        train = storing[node]
        if not isinstance(value, Tensor) or tuple(value.shape) != (span[1] - span[0], *train.shape[2:]) or value.dtype != train.dtype:
            pool.give(storing.pop(node))  # not image-major after all (a leading dim that only matched the first span): recomputed
            refused.add(node)
            return
        train[t, span[0] : span[1]] = value

    sharing: set[fx.Node] = set()
    try:
        for index, layer in enumerate(layers):
            name, module = str(layer.target), modules[str(layer.target)]
            later = {target: plans[target] for target in targets[index + 1 :]}
            read_later = set().union(*(p.boundary for p in later.values())) if later else set()
            buffer: Tensor | None = None  # the layer's input, all images, filled span by span: one buffer for every step

            def layer_input(t: int) -> Tensor:
                nonlocal buffer
                source = layer.all_input_nodes[0]
                x: Tensor | None = None
                for span in spans:
                    part = inputs_at(layer, span, t)[source]
                    if len(spans) == 1:
                        return part  # type: ignore[return-value]
                    if buffer is None:
                        buffer = pool.take((total, *part.shape[1:]), part.dtype, part.device)  # type: ignore[union-attr]
                    buffer[span[0] : span[1]] = part
                    del part
                    x = buffer
                assert x is not None
                return x

            if layer_prepass is not None and len(layer.all_input_nodes) == 1:  # sharing is empty here: nothing is stored
                for t in range(steps):
                    layer_prepass(name, module, layer_input(t), t)
                    interpreter.env = {}
            sharing = _shared_values(plans[layer], later, nodes, stops, refused) if may_cache else set()
            train: PackedSpikes | list[Tensor] | None = None
            donor: PackedSpikes | None = None  # an input train whose buffer this layer's train takes over
            for t in range(steps):
                x: Tensor | None = None
                if len(layer.all_input_nodes) == 1:
                    x = layer_input(t)
                    out = layer_step(name, module, x, t)
                else:  # several inputs (an analog op of a hybrid net): all images at once, its own forward
                    interpreter.env = inputs_at(layer, (0, total), t)
                    args, kwargs = interpreter.fetch_args_kwargs_from_env(layer)
                    out = module(*args, **kwargs)
                if train is None:
                    dtype = x.dtype if out.dtype == torch.bool and x is not None else out.dtype  # a bool step output stands for 0/1 in the input's dtype
                    if module in spike_sources and getattr(module, "max_spikes", 1) == 1:  # burst counts (0..K) are kept as they are
                        donor = _donor(trains, set(plans[layer].boundary), read_later, steps, tuple(out.shape))  # its buffer now holds this train
                        train = PackedSpikes(donor.bits, tuple(out.shape), dtype, out.device) if donor is not None else PackedSpikes.empty(steps, tuple(out.shape), dtype, out.device, pool)
                    else:
                        train = []
                if isinstance(train, PackedSpikes):
                    train.store(t, out)
                else:
                    aliased = buffer is not None and out.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
                    train.append(out.clone() if aliased else out)  # the buffer is overwritten next step
                interpreter.env = {}
                del out, x
            module.reset_state()  # its state is not needed any more
            if buffer is not None:
                pool.give(buffer)
            del buffer
            assert train is not None
            trains[layer] = train
            largest = max(largest, _train_bytes(train))
            if storing:  # the later plans read these values instead of computing them
                trains.update(storing)
                cached.update(storing)
                storing.clear()
                plans.update({target: _plan(nodes, target, stops) for target in targets[index + 1 :]})
            sharing = set()
            read_later = set().union(*(plans[target].boundary for target in targets[index + 1 :])) if index + 1 < len(targets) else set()
            for node in [n for n in trains if n not in read_later]:
                dropped = trains.pop(node)
                if isinstance(dropped, PackedSpikes) and dropped is not donor:
                    pool.give(dropped.bits)
                elif isinstance(dropped, Tensor):
                    pool.give(dropped)
            for values in fixed.values():
                for node in [n for n in values if n not in read_later]:
                    del values[node]
            release_free_heap()  # the layer's temporaries: the next layer's should not sit beside them
        if output_step is not None:
            for t in range(steps):
                parts = []
                for span in spans:
                    env = inputs_at(output, span, t)
                    value = interpreter.run_node(output)  # the output node returns its argument
                    if isinstance(value, Tensor) and any(n in cached for n in output.all_input_nodes):
                        value = value.clone()  # a cached train's view: the pool hands its buffer out again after the run
                    parts.append(value)
                    del env
                output_step(t, parts[0] if len(parts) == 1 else torch.cat(parts))
    finally:
        interpreter.env = {}
        for held in list(storing.values()) + list(trains.values()):  # the pool may be the caller's, shared by its runs
            if isinstance(held, PackedSpikes):
                pool.give(held.bits)  # a donor's bits and its taker's are one buffer: the second give is ignored
            elif isinstance(held, Tensor):
                pool.give(held)
        storing.clear()
        trains.clear()
        for module in temporal:
            module.reset_state()
