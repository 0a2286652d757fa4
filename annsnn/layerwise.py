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

from .free_heap import release_free_heap
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


def _donor(trains: dict, inputs: set, last_use: dict, index: int, steps: int, shape: tuple[int, ...]) -> "PackedSpikes | None":
    """A spike train this layer reads for the last time and whose buffer fits the layer's own
    train exactly: step t of the layer's output can overwrite step t of that input, which
    no one reads after the layer's step t (all of a step's inputs are read before the layer
    runs it). Saves one train per residual add, where the block's input and its branch end."""
    size = PackedSpikes.bits_shape(steps, shape)
    for node in sorted(inputs, key=lambda n: n.name):
        cached = trains.get(node)
        if last_use.get(node) == index and isinstance(cached, PackedSpikes) and tuple(cached.bits.shape) == size:
            return cached
    return None


@torch.no_grad()
def run_layerwise(snn: SpikingNetwork, images: Tensor, steps: int, *, batch: int = 64, layer_step: LayerStep = call_module, pool: BufferPool | None = None, output_step: Callable[[int, Tensor], None] | None = None) -> None:
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
    """
    pool = BufferPool() if pool is None else pool
    release_free_heap()  # what earlier passes freed: the run's buffers should not sit on top of it
    runner = snn.runner("direct")
    graph = runner.graph
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

    layers = [n for n in graph.nodes if is_layer(n)]
    output = next(n for n in graph.nodes if n.op == "output")
    # per layer (and the output, when asked for): the stateless nodes to run at each step
    # (topological order) and the boundary values they start from (static values, or other
    # layers' cached outputs)
    plan: dict[fx.Node, tuple[list[fx.Node], set[fx.Node]]] = {}
    drops: dict[fx.Node, dict[fx.Node, list[fx.Node]]] = {}  # per layer: after running a node, the values no later node needs
    last_use: dict[fx.Node, int] = {}
    for index, layer in enumerate(layers + ([output] if output_step is not None else [])):
        between: set[fx.Node] = set()
        boundary: set[fx.Node] = set()
        todo = list(layer.all_input_nodes)
        while todo:
            node = todo.pop()
            if node in static or is_layer(node):
                boundary.add(node)
            elif node not in between:
                between.add(node)
                todo.extend(node.all_input_nodes)
        order = [n for n in graph.nodes if n in between and n is not output]
        plan[layer] = (order, boundary)
        position = {n: i for i, n in enumerate(order)}
        for node in boundary | set(order):  # drop a value once the last node here that reads it has run
            readers = [position[u] for u in node.users if u in position]
            if readers and node not in layer.all_input_nodes:
                drops.setdefault(layer, {}).setdefault(order[max(readers)], []).append(node)
        for node in boundary:
            last_use[node] = index

    temporal = [m for m in runner.modules() if isinstance(m, TemporalModule)]
    for module in temporal:
        module.reset_state()
        module.steps = 1
    snn.encoder.encoding = "direct"
    interpreter = fx.Interpreter(runner)
    spans = [(lo, min(lo + batch, total)) for lo in range(0, total, batch)]
    fixed: dict[tuple[int, int], dict[fx.Node, object]] = {}  # per image span: the static values read later
    trains: dict[fx.Node, PackedSpikes | list[Tensor]] = {}  # layer -> its output at every step

    def static_values(span: tuple[int, int]) -> dict[fx.Node, object]:
        if span not in fixed:
            env: dict[fx.Node, object] = {}
            interpreter.env = env
            for node in graph.nodes:  # as the runner does: everything static, once per batch
                if node in static and node.op != "output":
                    env[node] = images[span[0] : span[1]] if node.op == "placeholder" else interpreter.run_node(node)
            fixed[span] = {n: v for n, v in env.items() if n in last_use}
        return fixed[span]

    def inputs_at(layer: fx.Node, span: tuple[int, int], t: int) -> dict[fx.Node, object]:
        """The values of ``layer``'s inputs (and the stateless nodes before them) at step t
        for images ``span``: from static values and cached trains."""
        values = static_values(span)
        env: dict[fx.Node, object] = {}
        for node in plan[layer][1]:
            if node in values:
                env[node] = values[node]
            else:
                cached = trains[node]
                env[node] = cached.load(t, *span) if isinstance(cached, PackedSpikes) else cached[t][span[0] : span[1]]
        interpreter.env = env
        done = drops.get(layer, {})
        for node in plan[layer][0]:
            env[node] = interpreter.run_node(node)
            for value in done.get(node, ()):  # bounded temporaries: an op's inputs go once read for the last time
                del env[value]
        return env

    try:
        for index, layer in enumerate(layers):
            name, module = str(layer.target), modules[str(layer.target)]
            train: PackedSpikes | list[Tensor] | None = None
            donor: PackedSpikes | None = None  # an input train whose buffer this layer's train takes over
            buffer: Tensor | None = None  # the layer's input, all images, filled span by span: one buffer for every step
            for t in range(steps):
                x: Tensor | None = None
                if len(layer.all_input_nodes) == 1:
                    source = layer.all_input_nodes[0]
                    for span in spans:
                        part = inputs_at(layer, span, t)[source]
                        if len(spans) == 1:
                            x = part  # type: ignore[assignment]
                            break
                        if buffer is None:
                            buffer = pool.take((total, *part.shape[1:]), part.dtype, part.device)  # type: ignore[union-attr]
                        buffer[span[0] : span[1]] = part
                        del part
                        x = buffer
                    assert x is not None
                    out = layer_step(name, module, x, t)
                else:  # several inputs (an analog op of a hybrid net): all images at once, its own forward
                    interpreter.env = inputs_at(layer, (0, total), t)
                    args, kwargs = interpreter.fetch_args_kwargs_from_env(layer)
                    out = module(*args, **kwargs)
                if train is None:
                    dtype = x.dtype if out.dtype == torch.bool and x is not None else out.dtype  # a bool step output stands for 0/1 in the input's dtype
                    if module in spike_sources and getattr(module, "max_spikes", 1) == 1:  # burst counts (0..K) are kept as they are
                        donor = _donor(trains, plan[layer][1], last_use, index, steps, tuple(out.shape))  # its buffer now holds this train
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
            for node in [n for n, last in last_use.items() if last == index]:
                dropped = trains.pop(node, None)
                if isinstance(dropped, PackedSpikes) and dropped is not donor:
                    pool.give(dropped.bits)
                for values in fixed.values():
                    values.pop(node, None)
            release_free_heap()  # the layer's temporaries: the next layer's should not sit beside them
        if output_step is not None:
            for t in range(steps):
                parts = []
                for span in spans:
                    env = inputs_at(output, span, t)
                    parts.append(interpreter.run_node(output))  # the output node returns its argument
                    del env
                output_step(t, parts[0] if len(parts) == 1 else torch.cat(parts))
    finally:
        interpreter.env = {}
        for module in temporal:
            module.reset_state()
