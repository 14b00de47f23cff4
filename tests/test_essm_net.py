"""ESSMNet: shapes, the three exact views through the whole stack, causality and gradients."""
import pytest
import torch

from tsessm import StreamingNotSupported
from tsessm.nn import ESSMConfig, ESSMNet
from views import assert_views_agree


@pytest.mark.parametrize("mixer", ["auto", "none", "linear", "glu"])
@pytest.mark.parametrize("discretization", ["zoh", "bilinear"])
def test_forward_step_prefill_agree(mixer, discretization):
    torch.manual_seed(0)
    net = ESSMNet(3, 2, horizon=5, d_model=16, n_layers=3, d_state=8, n_heads=2,
                  discretization=discretization, dropout=0.3, mixer=mixer).eval()
    y = assert_views_agree(net, torch.randn(2, 90, 3), split=41)
    assert y.shape == (2, 90, 5, 2)


def test_causal_net_ignores_the_future_bidirectional_does_not():
    torch.manual_seed(0)
    x = torch.randn(1, 40, 2, dtype=torch.float64)
    changed = x.clone()
    changed[:, 25:] += 1.0
    causal = ESSMNet(2, 1, 3, d_model=8, d_state=4).double()
    assert (causal(x)[:, :25] - causal(changed)[:, :25]).abs().max() < 1e-10
    bidir = ESSMNet(2, 1, 3, d_model=8, d_state=4, bidirectional=True, dt_min=0.05, dt_max=0.5).double()
    assert (bidir(x)[:, :25] - bidir(changed)[:, :25]).abs().max() > 1e-4
    with pytest.raises(StreamingNotSupported):
        bidir.step(x[:, 0], bidir.initial_state(1))
    with pytest.raises(StreamingNotSupported):
        bidir.prefill(x)


def test_gradients_reach_every_parameter_and_double_works():
    torch.manual_seed(0)
    net = ESSMNet(2, 2, 4, d_model=8, n_layers=2, d_state=4, n_heads=2).double()
    out = net(torch.randn(3, 20, 2, dtype=torch.float64))
    assert out.dtype == torch.float64
    out.pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_one_head_has_no_mixer_several_heads_have_one():
    # the authors' form: with one head the MIMO B and C mix the channels already
    one = ESSMNet(1, 1, 4, d_model=16, n_layers=2, d_state=8, n_heads=1)
    assert not any(isinstance(m, torch.nn.Linear) for b in one.blocks for m in b.mixer)
    four = ESSMNet(1, 1, 4, d_model=16, n_layers=2, d_state=8, n_heads=4)
    assert all(isinstance(b.mixer[-1], torch.nn.Linear) for b in four.blocks)
    glu = ESSMNet(1, 1, 4, d_model=16, d_state=8, mixer="glu")
    assert isinstance(glu.blocks[0].mixer[-1], torch.nn.GLU)
    # d=128, N=64, two layers: the paper's ~13 % of an LSTM of the same width and depth (33 920 vs 264 192)
    core = ESSMNet(128, 1, 4, d_model=128, n_layers=2, d_state=64)
    lstm = torch.nn.LSTM(128, 128, 2)
    ratio = sum(p.numel() for p in core.blocks.parameters()) / sum(p.numel() for p in lstm.parameters())
    assert ratio <= 0.13


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="horizon"):
        ESSMNet(1, 1, 0)
    with pytest.raises(ValueError, match="mixer"):
        ESSMNet(1, 1, 4, mixer="attention")


def test_one_config_object_builds_the_net_and_is_checked_once():
    config = ESSMConfig(d_model=16, n_layers=3, d_state=8, n_heads=2, mixer="glu", dt_min=0.01)
    torch.manual_seed(0)
    by_config = ESSMNet(3, 2, 5, config)
    torch.manual_seed(0)
    by_keywords = ESSMNet(3, 2, 5, d_model=16, n_layers=3, d_state=8, n_heads=2, mixer="glu", dt_min=0.01)
    assert by_config.config == by_keywords.config == config
    for (name, a), (_, b) in zip(by_config.state_dict().items(), by_keywords.state_dict().items()):
        assert torch.equal(a, b), name
    assert len(by_config.blocks) == 3 and all(b.ssm.n_heads == 2 for b in by_config.blocks)
    assert ESSMNet(3, 2, 5, config, n_layers=1).config == ESSMConfig(**{**config.as_dict(), "n_layers": 1})
    with pytest.raises(ValueError, match="n_heads=3 must divide d_model=16"):
        ESSMConfig(d_model=16, n_heads=3)
    with pytest.raises(ValueError, match="mixer must be one of"):
        ESSMNet(1, 1, 1, mixer="attention")
    with pytest.raises(TypeError):
        ESSMNet(1, 1, 1, width=8)  # not a field of ESSMConfig
