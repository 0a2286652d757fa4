"""Trace an ANN with torch.fx and bring it to the canonical form the converter maps.

Canonical form:

* every ReLU-like activation (module or functional ReLU, ReLU6, ``hardtanh(0, a)``,
  ``clamp(min=0)``) is a distinct :class:`~annsnn.layers.ReLUClip` module;
* Dropout and Identity are gone (no-ops in eval);
* BatchNorm that follows a Conv/Linear is folded into it (``torch.nn.utils.fusion``);
  a standalone BatchNorm2d becomes an equivalent depthwise 1x1 conv;
* functional pools are modules; ``maxpool -> activation`` becomes
  ``activation -> maxpool`` (exact: a monotone activation commutes with max);
* unconvertible activations (GELU, SiLU, ...) are listed; with ``hybrid`` they
  stay analog;
* every call site of a module has its own module (a module called twice is copied),
  and no two modules share a parameter, so rescaling one site's weights never changes
  another's; parametrized weights (``weight_norm``) become plain Conv/Linear weights;
* a subgraph that does not depend on the input (Swin V2's position-bias MLP on a stored
  table) is evaluated once and becomes one stored tensor;
* an in-place op's later readers of its input read its result instead, so an
  ``F.relu(y, inplace=True)`` whose result is discarded is kept.

Every op is classified by its entry in the op registry (:mod:`annsnn.ops`): its role
(ReLU-like, dropout, analog activation, ...), its ReLU form and its functional-to-module
lowering; a registered module type is a leaf of the trace.

Canonicalization works on a copy: the user's model is never modified. Each canonical
node records in ``node.meta["annsnn_origin"]`` the name of the traced node whose value
it equals, so :mod:`annsnn.equivalence` can name the first node that diverges.
"""
from __future__ import annotations

import copy
import inspect
import operator
from dataclasses import dataclass, field
from enum import StrEnum

import torch
from torch import fx, nn

from .errors import UsageError
from .layers import Normalize, ReLUClip
from .ops import default_registry
from .opspec import OpRegistry, Role, describe
from .training_mode import evaluating

__all__ = [
    "CanonicalGraph",
    "canonicalize",
    "max_pools",
    "trace",
    "classify_activation",
    "ActivationClass",
    "WithInputNormalization",
    "check_runs",
    "mutates_first_argument",
]


@dataclass
class CanonicalGraph:
    """A traced ANN in canonical form, plus what canonicalization found."""

    module: fx.GraphModule
    registry: OpRegistry  # the ops it was classified with
    activations: list[str] = field(default_factory=list)  # ReLUClip submodule names, in order
    analog: list[str] = field(default_factory=list)  # unconvertible activations kept analog (hybrid)
    folded_bn: list[str] = field(default_factory=list)
    reordered_pools: list[str] = field(default_factory=list)
    copied_modules: list[str] = field(default_factory=list)  # "c -> c_2": a weighted module's extra call sites
    materialized: list[str] = field(default_factory=list)  # parametrized layers made plain
    reference: nn.Module | None = None  # the user's model (with normalization in front), eval mode
    traced: fx.GraphModule | None = None  # its fx trace, before canonicalization (shares its modules)


ORIGIN = "annsnn_origin"  # node.meta key: the traced node whose value this node equals


def trace(model: nn.Module, registry: OpRegistry) -> fx.GraphModule:
    """Symbolically trace ``model``; an untraceable one gives a one-line error. A module
    type registered in ``registry`` is a leaf (called, not traced into)."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UsageError(
            "a TorchScript module must be lifted to standard modules first: "
            "annsnn.model_files.load_model(path, input_shape=...) or annsnn.model_files.convertible_module(loaded, input_shape)"
        )
    try:
        tracer = _Tracer(registry)
        graph = tracer.trace(model)
        return fx.GraphModule(tracer.root, graph, type(model).__name__)
    except Exception as exc:  # fx raises many kinds; name the cause in one line
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot trace the model with torch.fx ({type(exc).__name__}: {message})") from None


class _Tracer(fx.Tracer):
    """Treats annsnn's own layers and every registered module type as leaves, like torch.nn's."""

    def __init__(self, registry: OpRegistry) -> None:
        super().__init__()
        self.registry = registry

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (Normalize, ReLUClip)) or self.registry.for_module(m) is not None:
            return True
        return super().is_leaf_module(m, module_qualified_name)


class ActivationClass(StrEnum):
    """What an activation call is to conversion (:func:`classify_activation`)."""

    RELU = "relu"  # ReLU-like: becomes IF neurons (with its ceiling, if any)
    ANALOG = "analog"  # an activation with no IF form: refused, or analog under --hybrid
    DROPOUT = "dropout"  # the identity in eval: removed
    OTHER = "other"  # not an activation


def classify_activation(node: fx.Node, modules: dict[str, nn.Module], registry: OpRegistry) -> tuple[ActivationClass, float | None]:
    """Classify ``node`` by its registry entry: (RELU, ceiling) for a ReLU-like call,
    (ANALOG, None) for an activation with no IF form, (DROPOUT, None) for an identity
    in eval, else (OTHER, None)."""
    if node.op not in ("call_module", "call_function", "call_method"):
        return ActivationClass.OTHER, None
    spec = registry.lookup(node, modules)
    if spec is None:
        return ActivationClass.OTHER, None
    if spec.role is Role.NEURON:
        assert spec.relu is not None
        form = spec.relu(node, modules[str(node.target)] if node.op == "call_module" else None)
        if form is not None:
            return ActivationClass.RELU, form.ceiling
    if spec.role is Role.DROP and (spec.when is None or spec.when(node)):
        return ActivationClass.DROPOUT, None
    if spec.activation:
        return ActivationClass.ANALOG, None
    return ActivationClass.OTHER, None


def _unique_name(gm: fx.GraphModule, base: str) -> str:
    name = base.replace(".", "_")
    candidate, k = name, 1
    while hasattr(gm, candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def canonicalize(
    model: nn.Module,
    *,
    normalization: tuple[list[float], list[float]] | None = None,
    hybrid: bool = False,
    maxpool_to_avgpool: bool = False,
    input_shape: tuple[int, ...] | None = None,
    registry: OpRegistry | None = None,
) -> CanonicalGraph:
    """Trace ``model`` (with an optional input normalization in front) and canonicalize it.

    With ``input_shape``, sizes read in ``forward`` (``x.size(3)``) become constants,
    except the batch size, so pools sized at run time convert. Ops are classified by
    ``registry`` (default :func:`annsnn.ops.default_registry`), which the result keeps.
    """
    with evaluating(model):  # the user's model back in its own mode afterwards
        return _canonicalize(model, normalization=normalization, hybrid=hybrid, maxpool_to_avgpool=maxpool_to_avgpool, input_shape=input_shape, registry=registry)


def _canonicalize(model: nn.Module, *, normalization, hybrid: bool, maxpool_to_avgpool: bool, input_shape, registry: OpRegistry | None) -> CanonicalGraph:
    registry = registry if registry is not None else default_registry()
    if normalization is not None:
        model = WithInputNormalization(model, *normalization).eval()
    traced = trace(model, registry)
    gm = _private_copy(traced)  # never modify the user's modules
    for node in gm.graph.nodes:
        node.meta[ORIGIN] = node.name
    materialized = _materialize_parametrizations(gm, registry)
    if input_shape is not None:
        _fold_static_sizes(gm, input_shape)
    _functionalize_inplace(gm)
    _fold_input_independent(gm, registry)
    copied = _one_module_per_call_site(gm)
    _untie_parameters(gm)
    result = _canonicalize_traced(gm, hybrid=hybrid, maxpool_to_avgpool=maxpool_to_avgpool, registry=registry)
    result.registry = registry
    result.copied_modules = copied
    result.materialized = materialized
    result.reference = model
    result.traced = traced
    if maxpool_to_avgpool:
        # --maxpool avg asks for a different ANN: the equivalence check compares against the
        # user's model with exactly that replacement, and nothing else changed
        requested = _private_copy(traced)
        _functional_pools_to_modules(requested, registry)
        _replace_maxpool(requested)
        requested.recompile()
        result.reference = requested.eval()
        result.traced = requested
    return result


def _private_copy(traced: fx.GraphModule) -> fx.GraphModule:
    """A deep copy; old-style ``weight_norm`` keeps its weight as a non-leaf tensor, which
    ``deepcopy`` refuses, so that tensor is copied detached (it is recomputed anyway)."""
    from torch.nn.utils.weight_norm import WeightNorm

    memo: dict[int, object] = {}
    for module in traced.modules():
        for hook in module._forward_pre_hooks.values():
            tensor = getattr(module, hook.name, None) if isinstance(hook, WeightNorm) else None
            if isinstance(tensor, torch.Tensor) and not tensor.is_leaf:
                memo[id(tensor)] = tensor.detach().clone()
    return copy.deepcopy(traced, memo)


def _plain_weight_layer(name: str, layer: nn.Module, registry: OpRegistry) -> nn.Module:
    """A plain weight layer (its registry entry's save/load) holding ``layer``'s effective
    (parametrized) weight and bias."""
    spec = registry.for_base(layer)
    if spec is None or spec.role is not Role.WEIGHT or spec.save is None or spec.load is None:
        raise UsageError(f"unsupported layer {name} ({type(layer).__name__}): a parametrized or hooked weight on a layer that is not a registered weight layer")
    plain = spec.load(spec.save(layer), {}, "", registry)
    with torch.no_grad():
        plain.weight.copy_(layer.weight)
        if layer.bias is not None:
            plain.bias.copy_(layer.bias)
    return plain.to(layer.weight.device, layer.weight.dtype).eval()


def _materialize_parametrizations(gm: fx.GraphModule, registry: OpRegistry) -> list[str]:
    """Parametrized (``torch.nn.utils.parametrizations.weight_norm``...) and old-style
    ``weight_norm`` layers become plain layers with the weight they compute in eval mode.
    (``remove_parametrizations`` is not used: it edits the class shared with the user's model.)"""
    from torch.nn.utils import parametrize
    from torch.nn.utils.weight_norm import WeightNorm

    done = []
    for name, module in list(gm.named_modules()):
        hooks = list(module._forward_pre_hooks.values())
        if parametrize.is_parametrized(module):
            gm.set_submodule(name, _plain_weight_layer(name, module, registry))
            done.append(name)
        elif hooks and all(isinstance(h, WeightNorm) for h in hooks):
            for hook in hooks:
                with torch.no_grad():
                    setattr(module, hook.name, hook.compute_weight(module))
            gm.set_submodule(name, _plain_weight_layer(name, module, registry))
            done.append(name)
        elif (spec := registry.for_base(module)) is not None and spec.role is Role.WEIGHT and (hooks or module._forward_hooks):
            raise UsageError(f"unsupported layer {name} ({type(module).__name__}): it has forward hooks, which conversion cannot keep")
    return done


_INPLACE_OPERATORS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


def mutates_first_argument(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """True for an op that writes its result into its first argument."""
    if node.op == "call_module":
        return bool(getattr(modules.get(str(node.target)), "inplace", False))
    if node.op == "call_method":
        name = str(node.target)
        return name.endswith("_") and not name.startswith("_")
    if node.op != "call_function":
        return False
    if node.target in _INPLACE_OPERATORS:
        return True
    fn_name = getattr(node.target, "__name__", "")
    if fn_name.endswith("_") and not fn_name.startswith("_"):
        return True
    try:
        bound = inspect.signature(node.target).bind(*node.args, **node.kwargs)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return bound.arguments.get("inplace") is True


def _functionalize_inplace(gm: fx.GraphModule) -> None:
    """After an in-place op ``n`` on ``y``, later readers of ``y`` read ``n`` instead.

    So ``F.relu(y, inplace=True); return fc(y)`` becomes ``fc(relu(y))`` and survives
    canonicalization, where every activation becomes an out-of-place module."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    order = {n: i for i, n in enumerate(graph.nodes)}
    for node in list(graph.nodes):
        if not node.args or not isinstance(node.args[0], fx.Node) or not mutates_first_argument(node, modules):
            continue
        mutated = node.args[0]
        for user in list(mutated.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(mutated, node)


def _one_module_per_call_site(gm: fx.GraphModule) -> list[str]:
    """A module called at several sites gets a copy per extra site (exact: same weights)."""
    sites: dict[str, int] = {}
    copied = []
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        target = str(node.target)
        sites[target] = sites.get(target, 0) + 1
        if sites[target] == 1:
            continue
        name = f"{target}_{sites[target]}"  # beside the original: layer1.0.relu -> layer1.0.relu_2
        while _has_path(gm, name):
            name += "_"
        module = gm.get_submodule(target)
        gm.add_submodule(name, copy.deepcopy(module))
        node.target = name
        if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
            copied.append(f"{target} -> {name}")  # shared weights (a parameter-free module is not worth a note)
    return copied


def _untie_parameters(gm: fx.GraphModule) -> None:
    """No two modules share a parameter or buffer (conversion rescales weights in place)."""
    seen: set[int] = set()
    for module in gm.modules():
        for store in (module._parameters, module._buffers):
            for key, tensor in list(store.items()):
                if tensor is None:
                    continue
                if id(tensor) in seen:
                    clone = tensor.detach().clone()
                    store[key] = nn.Parameter(clone, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else clone
                else:
                    seen.add(id(tensor))


def check_runs(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """One-line error if ``model`` cannot take a batch of ``input_shape``."""
    try:
        with torch.no_grad():
            model(torch.zeros(2, *input_shape))
    except Exception as exc:  # any shape/dtype failure inside the user's model
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"the model does not run on input shape {tuple(input_shape)} ({message}); pass --input-shape C,H,W") from None


def _fold_static_sizes(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> None:
    """Replace ``size(d)`` / ``size()[d]`` / ``shape[d]`` for d != batch by constants."""
    from .shape_prop import propagate_shapes

    check_runs(gm, input_shape)
    reshapes = _reshapes_by_a_size(gm.graph)
    at_three: dict[fx.Node, tuple[int, ...]] = {}
    if reshapes:  # only then: the shapes at a second batch size tell a batch-major reshape
        with torch.no_grad():
            propagate_shapes(gm, torch.zeros(3, *input_shape))
        at_three = {n: tuple(n.meta["tensor_meta"].shape) for n in reshapes if hasattr(n.meta.get("tensor_meta"), "shape")}
    with torch.no_grad():
        propagate_shapes(gm, torch.zeros(2, *input_shape))
    graph = gm.graph
    _batch_major_reshapes(reshapes, at_three, graph)
    for node in list(graph.nodes):
        if node.op == "call_method" and node.target == "dim" and isinstance(node.args[0], fx.Node):
            meta = node.args[0].meta.get("tensor_meta")
            if meta is not None and hasattr(meta, "shape"):
                node.replace_all_uses_with(len(meta.shape))  # type: ignore[arg-type]
                graph.erase_node(node)
            continue
        is_size = node.op == "call_method" and node.target == "size"
        is_shape = node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] == "shape"
        if not (is_size or is_shape):
            continue
        src = node.args[0]
        meta = src.meta.get("tensor_meta") if isinstance(src, fx.Node) else None
        if meta is None or not hasattr(meta, "shape"):
            continue
        shape = tuple(meta.shape)
        dim = node.args[1] if is_size and len(node.args) > 1 else node.kwargs.get("dim") if is_size else None
        if isinstance(dim, int):
            if dim % len(shape) != 0:
                node.replace_all_uses_with(shape[dim])  # type: ignore[arg-type]
                graph.erase_node(node)
            continue
        for user in list(node.users):
            if user.op == "call_function" and user.target is operator.getitem and isinstance(user.args[1], int) and user.args[1] % len(shape) != 0:
                user.replace_all_uses_with(shape[user.args[1]])  # type: ignore[arg-type]
                graph.erase_node(user)
        if not node.users:
            graph.erase_node(node)
    _fold_constant_arithmetic(graph)
    graph.lint()
    gm.recompile()


_RESHAPES = {("call_method", "view"), ("call_method", "reshape"), ("call_function", torch.reshape)}


def _reshape_dims(node: fx.Node) -> list:
    """The target shape of a ``view``/``reshape`` node, as a flat list."""
    dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
    return list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else list(dims)


def _reshapes_by_a_size(graph: fx.Graph) -> list[fx.Node]:
    """The ``view``/``reshape`` nodes whose target shape reads a size at run time."""
    return [node for node in graph.nodes
            if (node.op, node.target if node.op == "call_function" else str(node.target)) in _RESHAPES and isinstance(node.args[0], fx.Node)
            and "shape" not in node.kwargs and any(isinstance(d, fx.Node) for d in _reshape_dims(node))]


def _batch_major_reshapes(reshapes: list[fx.Node], at_three: dict[fx.Node, tuple[int, ...]], graph: fx.Graph) -> None:
    """``h.view(b, -1)`` with ``b = x.size(0)``: a reshape whose shape reads the batch size.

    The SNN runs its time steps as one batch of T·B, so a batch size read from the input
    (B) would not fit a tensor of the time-merged part. When the reshape's output is
    batch-major, ``[B, *rest]`` at batch 2 (the nodes' shapes) and at batch 3 alike
    (``at_three``), its shape becomes ``(-1, *rest)``: the same result for any batch."""
    for node in reshapes:
        meta = node.meta.get("tensor_meta")
        two, three = (tuple(meta.shape) if hasattr(meta, "shape") else None), at_three.get(node)
        if two is None or three is None or not two or two[0] != 2 or three != (3, *two[1:]):
            continue
        shape = (-1, *(int(d) for d in two[1:]))
        node.args = (node.args[0], *shape) if node.op == "call_method" else (node.args[0], shape)
    for node in reversed(list(graph.nodes)):  # the size reads nothing uses any more
        if not node.users and node.op in ("call_method", "call_function") and node.target in ("size", "dim", getattr, *_PURE_FUNCTIONS):
            graph.erase_node(node)


_PURE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod, operator.pow,
    operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge, operator.getitem,
}


def _fold_constant_arithmetic(graph: fx.Graph) -> None:
    """Evaluate arithmetic on folded sizes (``c // groups``, ``h == 224``) so that ops such as
    ``view(b, groups, c // groups, h, w)`` get plain ints; drop ``torch._assert`` on constants
    (it raises here if the assertion is false)."""
    for node in list(graph.nodes):
        if node.op != "call_function" or any(isinstance(a, fx.Node) for a in node.all_input_nodes):
            continue
        if node.target is torch._assert:
            torch._assert(*node.args, **node.kwargs)
            graph.erase_node(node)
        elif node.target in _PURE_FUNCTIONS and not any(isinstance(a, torch.Tensor) for a in node.args):
            value = node.target(*node.args, **node.kwargs)  # type: ignore[operator]
            node.replace_all_uses_with(value)  # type: ignore[arg-type]
            graph.erase_node(node)


_RANDOM_FUNCTIONS = {
    torch.rand, torch.randn, torch.randint, torch.rand_like, torch.randn_like, torch.randint_like, torch.randperm,
    torch.bernoulli, torch.normal, torch.poisson, torch.multinomial,
}
_RANDOM_METHODS = {"uniform_", "normal_", "bernoulli", "bernoulli_", "random_", "exponential_", "geometric_", "cauchy_", "log_normal_"}


def _is_random(node: fx.Node, registry: OpRegistry) -> bool:
    if node.op == "call_function":
        spec = registry.for_function(node.target)
        return node.target in _RANDOM_FUNCTIONS or (spec is not None and spec.role is Role.DROP)
    return node.op == "call_method" and node.target in _RANDOM_METHODS


def _fold_input_independent(gm: fx.GraphModule, registry: OpRegistry) -> None:
    """Evaluate every tensor computed from stored tensors and constants alone (no path from
    the input) once, and store it: ``y = f(buffers)`` becomes ``get_attr``. Swin V2's
    continuous position bias, ``16 * sigmoid(mlp(table))`` (Liu et al., "Swin Transformer
    V2", CVPR 2022, arXiv:2111.09883), is such a subgraph: it is a constant of the trained
    model, not a layer to convert. Random ops are never folded."""
    constant: dict[fx.Node, object] = {}
    modules = dict(gm.named_modules())
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                constant[node] = _fetch_attr(gm, str(node.target))
                continue
            if node.op not in ("call_function", "call_method", "call_module") or _is_random(node, registry):
                continue
            if not all(a in constant for a in node.all_input_nodes):
                continue
            if not node.all_input_nodes:
                continue  # sizes and literals: _fold_constant_arithmetic's job
            args = fx.node.map_arg(node.args, lambda a: constant[a])
            kwargs = fx.node.map_arg(node.kwargs, lambda a: constant[a])
            if node.op == "call_function":
                constant[node] = node.target(*args, **kwargs)  # type: ignore[operator]
            elif node.op == "call_method":
                constant[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
            else:
                constant[node] = modules[str(node.target)](*args, **kwargs)
    for node in list(gm.graph.nodes):
        value = constant.get(node)
        if node.op == "get_attr" or not isinstance(value, torch.Tensor):
            continue
        if all(user in constant for user in node.users):
            continue  # only read by other folded nodes
        name = _unique_name(gm, f"{node.name}_folded")
        gm.register_buffer(name, value.detach().clone().contiguous())
        with gm.graph.inserting_before(node):
            new = gm.graph.get_attr(name)
        _keep_origin(node, new)
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user not in constant)
    read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    gm.graph.eliminate_dead_code()
    gm.graph.lint()
    still_read = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    called = [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    for target in sorted(read - still_read):  # a stored tensor only the folded part read
        owner_path, _, last = target.rpartition(".")
        if any(owner_path == c or owner_path.startswith(c + ".") for c in called):
            continue  # its module still runs and uses it
        owner = gm.get_submodule(owner_path) if owner_path else gm
        owner._parameters.pop(last, None)
        owner._buffers.pop(last, None)
    gm.delete_all_unused_submodules()
    gm.recompile()


def _fetch_attr(gm: nn.Module, path: str) -> object:
    value: object = gm
    for part in path.split("."):
        value = getattr(value, part)
    return value


class WithInputNormalization(nn.Module):
    """``model(normalize(x))``: the form every annsnn ANN and SNN takes."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def _canonicalize_traced(gm: fx.GraphModule, *, hybrid: bool, maxpool_to_avgpool: bool, registry: OpRegistry) -> CanonicalGraph:
    result = CanonicalGraph(module=gm, registry=registry)
    graph = gm.graph
    modules = dict(gm.named_modules())
    unconvertible: list[str] = []
    used_targets: dict[str, int] = {}

    for node in list(graph.nodes):
        kind, ceiling = classify_activation(node, modules, registry)
        if kind is ActivationClass.DROPOUT:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif kind is ActivationClass.RELU:
            if node.op == "call_module":
                base = str(node.target)
                used_targets[base] = used_targets.get(base, 0) + 1
                if used_targets[base] == 1:
                    name = base
                    gm.set_submodule(name, ReLUClip(ceiling))
                else:
                    name = f"{base}_{used_targets[base]}"
                    while _has_path(gm, name):
                        name += "_"
                    gm.add_submodule(name, ReLUClip(ceiling))
            else:
                name = _scoped_name(gm, node)
                gm.add_submodule(name, ReLUClip(ceiling))
            with graph.inserting_after(node):
                new = graph.call_module(name, (node.args[0],))
            _keep_origin(node, new)
            node.replace_all_uses_with(new)
            graph.erase_node(node)
            result.activations.append(name)
        elif kind is ActivationClass.ANALOG:
            if not hybrid:
                unconvertible.append(describe(node, modules))
            else:
                result.analog.append(describe(node, modules))
    if unconvertible:
        raise UsageError(
            "cannot convert activation(s) " + ", ".join(unconvertible)
            + " to IF neurons; pass --hybrid to keep them analog"
        )
    _functional_pools_to_modules(gm, registry)
    modules = dict(gm.named_modules())
    _fold_batchnorm(gm, result, registry)
    _standalone_batchnorm(gm)
    if maxpool_to_avgpool:
        _replace_maxpool(gm)
    _reorder_maxpool(gm, result)
    graph.eliminate_dead_code()
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return result


def _functional_pools_to_modules(gm: fx.GraphModule, registry: OpRegistry) -> None:
    """A functional call whose entry has a ``lower`` rule (``F.avg_pool2d`` ...) becomes its module."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        spec = registry.for_function(node.target)
        if spec is None or spec.lower is None:
            continue
        module, source = spec.lower(node)
        name = _unique_name(gm, node.name)
        gm.add_submodule(name, module)
        with graph.inserting_after(node):
            new = graph.call_module(name, (source,))
        _keep_origin(node, new)
        node.replace_all_uses_with(new)
        graph.erase_node(node)


def _fold_batchnorm(gm: fx.GraphModule, result: CanonicalGraph, registry: OpRegistry) -> None:
    """A BatchNorm right after a layer whose entry can fold it (``OpSpec.fold_batchnorm``)
    becomes part of that layer."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules[str(node.target)], nn.modules.batchnorm._BatchNorm):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module" and len(prev.users) == 1):
            continue
        layer = modules[str(prev.target)]
        bn = modules[str(node.target)]
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        spec = registry.for_module(layer)
        fused = spec.fold_batchnorm(layer, bn) if spec is not None and spec.fold_batchnorm is not None else None
        if fused is None:
            continue
        gm.set_submodule(str(prev.target), fused)
        modules[str(prev.target)] = fused
        _keep_origin(node, prev)  # the layer's output is now the BatchNorm's
        node.replace_all_uses_with(prev)
        graph.erase_node(node)
        result.folded_bn.append(str(node.target))


def _standalone_batchnorm(gm: fx.GraphModule) -> None:
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        bn = modules[str(node.target)]
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            continue
        if bn.running_mean is None:  # batch statistics at every call: no fixed affine map to fold
            raise UsageError(f"unsupported layer {node.target} ({type(bn).__name__}): a BatchNorm without running statistics (track_running_stats=False) normalises by each batch's own, which no fixed layer can express")
        if not isinstance(bn, nn.BatchNorm2d):
            raise UsageError(f"unsupported layer {node.target} ({type(bn).__name__}): BatchNorm that does not follow a Conv/Linear")
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
        conv = nn.Conv2d(bn.num_features, bn.num_features, 1, groups=bn.num_features, bias=True)
        with torch.no_grad():
            conv.weight.copy_(scale.view(-1, 1, 1, 1))
            conv.bias.copy_(shift)
        gm.set_submodule(str(node.target), conv)


def max_pools(canonical: CanonicalGraph) -> list[str]:
    """The ``MaxPool2d`` layers of a canonical graph (functional max-pools included: they are
    modules there), by name: what ``--maxpool avg`` replaces."""
    return [name for name, module in canonical.module.named_modules() if isinstance(module, nn.MaxPool2d)]


def _replace_maxpool(gm: fx.GraphModule) -> None:
    for name, mod in list(gm.named_modules()):
        if isinstance(mod, nn.MaxPool2d):
            if mod.dilation not in (1, (1, 1)):
                raise UsageError(f"--maxpool avg cannot replace dilated max-pool {name}")
            gm.set_submodule(name, nn.AvgPool2d(mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode))


def _reorder_maxpool(gm: fx.GraphModule, result: CanonicalGraph) -> None:
    """``x -> maxpool -> act`` becomes ``x -> act -> maxpool`` (exact for monotone act)."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules[str(node.target)], nn.MaxPool2d):
            continue
        if len(node.users) != 1:
            continue
        act = next(iter(node.users))
        if not (act.op == "call_module" and isinstance(modules.get(str(act.target)), ReLUClip)):
            continue
        source = node.args[0]
        if isinstance(source, fx.Node) and source.op == "call_module" and isinstance(modules.get(str(source.target)), ReLUClip):
            continue
        _keep_origin(act, node)  # the pool now outputs what the activation did
        act.meta.pop(ORIGIN, None)
        act.replace_all_uses_with(node)
        node.replace_input_with(source, act)
        act.replace_input_with(node, source)
        node.prepend(act)  # the activation now runs before the pool
        result.reordered_pools.append(str(node.target))


def _keep_origin(old: fx.Node, new: fx.Node) -> None:
    """``new`` carries the value ``old`` carried."""
    if ORIGIN in old.meta:
        new.meta[ORIGIN] = old.meta[ORIGIN]
    else:
        new.meta.pop(ORIGIN, None)


def _scoped_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """``layer1.0.relu`` for an ``F.relu`` called in ``layer1[0].forward`` (from fx's module stack)."""
    stack = node.meta.get("nn_module_stack") or {}
    scope = next(reversed(stack.values()))[0] if stack else ""
    base = getattr(node.target, "__name__", str(node.target)).rstrip("_") or "act"
    name = f"{scope}.{base}" if scope else base
    candidate, k = name, 1
    while _has_path(gm, candidate):
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def _has_path(gm: nn.Module, path: str) -> bool:
    try:
        gm.get_submodule(path)
        return True
    except AttributeError:
        return False
