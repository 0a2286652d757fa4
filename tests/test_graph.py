import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annsnn.errors import UsageError
from annsnn.graph import canonicalize
from annsnn.layers import ReLUClip


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def test_conv_and_linear_batchnorm_folding_within_1e5():
    model = _randomize_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 5),
    ))
    canon = canonicalize(model)
    assert len(canon.folded_bn) == 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in canon.module.modules())
    x = torch.randn(10, 3, 4, 4)
    assert torch.allclose(canon.module(x), model(x), atol=1e-5)


def test_standalone_batchnorm_becomes_depthwise_conv():
    model = _randomize_bn(nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1)))
    canon = canonicalize(model)
    x = torch.randn(4, 3, 5, 5)
    assert torch.allclose(canon.module(x), model(x), atol=1e-5)


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.act = nn.ReLU()

    def forward(self, x):
        x = F.relu(self.a(x))
        x = torch.relu(self.b(x))
        x = self.act(x).relu()
        x = F.relu6(x) + F.hardtanh(x, 0.0, 2.0)
        x = x.clamp(min=0)
        x = F.dropout(self.act(x), 0.5, training=False)
        return x


def test_every_relu_form_becomes_a_distinct_activation():
    model = Functional().eval()
    canon = canonicalize(model)
    clips = [m for m in canon.module.modules() if isinstance(m, ReLUClip)]
    assert len(canon.activations) == len(clips) == 8  # the shared self.act used twice -> two neurons
    ceilings = sorted(c.ceiling for c in clips if c.ceiling is not None)
    assert ceilings == [2.0, 6.0]
    x = torch.randn(7, 4) * 3
    assert torch.allclose(canon.module(x), model(x), atol=1e-6)


def test_maxpool_before_relu_is_reordered_exactly():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3)).eval()
    canon = canonicalize(model)
    assert canon.reordered_pools
    x = torch.randn(5, 1, 6, 6)
    assert torch.allclose(canon.module(x), model(x), atol=1e-6)
    order = [n.target for n in canon.module.graph.nodes if n.op == "call_module"]
    assert order.index("2") < order.index("1")  # the ReLU now runs before the pool


@pytest.mark.parametrize("act", [nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.LeakyReLU()])
def test_unconvertible_activation_is_a_one_line_error_naming_it(act):
    model = nn.Sequential(nn.Linear(3, 3), act, nn.Linear(3, 2)).eval()
    with pytest.raises(UsageError) as info:
        canonicalize(model)
    message = str(info.value)
    assert type(act).__name__ in message and "--hybrid" in message and "\n" not in message


def test_hybrid_keeps_unconvertible_activation():
    model = nn.Sequential(nn.Linear(3, 3), nn.GELU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    canon = canonicalize(model, hybrid=True)
    assert len(canon.analog) == 1 and len(canon.activations) == 1


class Untraceable(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


def test_untraceable_model_names_the_problem():
    with pytest.raises(UsageError) as info:
        canonicalize(Untraceable())
    assert "torch.fx" in str(info.value) and "\n" not in str(info.value)


def test_sizes_read_in_forward_become_constants():
    class PoolBySize(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            x = F.relu(self.conv(x))
            x = F.avg_pool2d(x, x.size()[3])
            return x.view(x.size(0), -1)

    model = PoolBySize().eval()
    canon = canonicalize(model, input_shape=(1, 4, 4))
    x = torch.randn(3, 1, 4, 4)
    assert torch.allclose(canon.module(x), model(x), atol=1e-6)
    assert canon.module(torch.randn(5, 1, 4, 4)).shape == (5, 2)  # batch size stays dynamic


def test_canonicalization_never_modifies_the_users_model():
    model = _randomize_bn(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8, 2)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    canon = canonicalize(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[2], nn.ReLU)
    assert not any(p is q for p in canon.module.parameters() for q in model.parameters())


class TiedWeights(nn.Module):
    """Two Linear modules sharing one weight tensor, and one module called twice."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(F.relu(self.a(F.relu(self.a(x)))))


def test_every_call_site_owns_its_module_and_parameters():
    model = TiedWeights().eval()
    canon = canonicalize(model)
    targets = [n.target for n in canon.module.graph.nodes if n.op == "call_module" and isinstance(canon.module.get_submodule(n.target), nn.Linear)]
    assert len(targets) == len(set(targets)) == 3 and canon.copied_modules == ["a -> a_2"]
    weights = [canon.module.get_submodule(t).weight for t in targets]
    assert len({id(w) for w in weights}) == 3
    x = torch.randn(5, 4)
    assert torch.allclose(canon.module(x), model(x), atol=1e-6)


@pytest.mark.parametrize("inplace_form", ["functional", "method", "module"])
def test_inplace_relu_whose_result_is_discarded_still_rectifies(inplace_form):
    class Discard(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.act = nn.Linear(3, 3), nn.Linear(3, 2), nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.a(x)
            if inplace_form == "functional":
                F.relu(y, inplace=True)
            elif inplace_form == "method":
                y.relu_()
            else:
                self.act(y)
            return self.b(y)

    model = Discard().eval()
    canon = canonicalize(model)
    assert len(canon.activations) == 1
    x = torch.randn(9, 3)
    assert torch.allclose(canon.module(x), model(x), atol=1e-6)


def test_old_style_weight_norm_is_materialized_and_a_hooked_layer_is_one_line():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nn.Sequential(torch.nn.utils.weight_norm(nn.Linear(3, 4)), nn.ReLU(), nn.Linear(4, 2)).eval()
    canon = canonicalize(model)
    assert canon.materialized == ["0"] and type(canon.module.get_submodule("0")) is nn.Linear
    x = torch.randn(6, 3)
    assert torch.allclose(canon.module(x), model(x), atol=1e-6)
    hooked = nn.Sequential(nn.Linear(3, 4), nn.ReLU()).eval()
    hooked[0].register_forward_hook(lambda m, a, out: out * 2)
    with pytest.raises(UsageError) as info:
        canonicalize(hooked)
    assert "forward hooks" in str(info.value) and "\n" not in str(info.value)


class _StoredTableBias(nn.Module):
    """Swin V2's continuous position bias in small: an MLP with a ReLU applied to a stored
    table, a view and a sigmoid; none of it depends on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("table", torch.randn(6, 2))
        self.mlp = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        bias = 16 * torch.sigmoid(self.mlp(self.table).view(-1))
        return self.fc(x) + bias


def test_input_independent_subgraph_is_folded_to_one_stored_tensor():
    torch.manual_seed(0)
    model = _StoredTableBias().eval()
    canon = canonicalize(model, hybrid=True, input_shape=(6,))
    assert canon.activations == [] and canon.analog == []  # the MLP's ReLU and the sigmoid are gone
    stored = [n for n in canon.module.graph.nodes if n.op == "get_attr"]
    assert len(stored) == 1
    expected = 16 * torch.sigmoid(model.mlp(model.table).view(-1))
    assert torch.equal(getattr(canon.module, str(stored[0].target)), expected)
    assert not any(isinstance(m, nn.Linear) and m.in_features == 2 for m in canon.module.modules())
    assert "table" not in dict(canon.module.named_buffers())  # only the folded value is stored
    x = torch.randn(4, 6)
    assert torch.equal(canon.module(x), model(x))


def test_random_ops_without_input_are_not_folded():
    class Noisy(nn.Module):
        def forward(self, x):
            return x + torch.randn(x.shape[1])  # randn(3) once sizes fold: no input, not constant

    canon = canonicalize(Noisy(), input_shape=(3,))
    assert torch.randn in [n.target for n in canon.module.graph.nodes]
