import pytest
import torch
from torch.nn import functional as F

from hf_common.errors import ConfigError
from hf_fuse.methods.hypernet.network import DenoisingEncoder, HyperNet, HyperNetConfig, HyperNetOutput, count_parameters

CFG = HyperNetConfig(block_size=6, rank=3, embed_dim=16, n_heads=2, max_positions=32)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _inputs(cfg: HyperNetConfig = CFG, seed: int = 0, u: int = 3, tt: int = 5, ts: int = 7):
    """Random group batch with padding: sequence i has tt - i target and ts - 2i source tokens."""
    g = _gen(seed)
    tgt = torch.randn(u, tt, cfg.token_dim, generator=g)
    tgt_d = torch.rand(u, tt, cfg.rank, generator=g)
    src = torch.randn(u, ts, cfg.token_dim, generator=g)
    src_d = torch.rand(u, ts, cfg.rank, generator=g)
    tgt_m = torch.arange(tt)[None, :] < (tt - torch.arange(u))[:, None]
    src_m = torch.arange(ts)[None, :] < (ts - 2 * torch.arange(u))[:, None]
    return tgt, tgt_d, tgt_m, src, src_d, src_m


def _net(cfg: HyperNetConfig = CFG, seed: int = 0, live_decoder: bool = False) -> HyperNet:
    torch.manual_seed(seed)
    net = HyperNet(cfg)
    if live_decoder:
        with torch.no_grad():
            net.decoder[-1].weight.normal_(0, 0.5, generator=_gen(seed + 1))
            net.decoder[-1].bias.normal_(0, 0.5, generator=_gen(seed + 2))
    return net


def test_delta_is_exactly_zero_at_init():
    out = _net()(*_inputs())
    assert torch.equal(out.delta_tokens, torch.zeros_like(out.delta_tokens))
    assert _net().alpha.item() == pytest.approx(0.3)


def test_output_shapes_and_attention():
    inp = _inputs()
    tgt_m, src_m = inp[2], inp[5]
    out = _net(live_decoder=True)(*inp)
    assert isinstance(out, HyperNetOutput)
    assert out.delta_tokens.shape == (3, 5, CFG.token_dim)
    assert out.z_target.shape == (int(tgt_m.sum()), CFG.embed_dim)
    assert out.z_source.shape == (int(src_m.sum()), CFG.embed_dim)
    assert out.attention.shape == (3, 5, 7)
    assert torch.allclose(out.attention.sum(-1), torch.ones(3, 5), atol=1e-5)
    padded = (~src_m)[:, None, :].expand_as(out.attention)
    assert padded.any()
    assert torch.all(out.attention[padded] == 0)
    assert torch.all(out.delta_tokens[~tgt_m] == 0)
    assert out.delta_tokens[tgt_m].abs().sum() > 0


def test_column_view_is_the_transpose():
    """With equal row/column weights, f_col(flat(M)) == f_row(flat(M^T)) and differs from f_row(flat(M))."""
    cfg = HyperNetConfig(block_size=4, rank=2, embed_dim=16, n_heads=2)
    enc = DenoisingEncoder(cfg)
    with torch.no_grad():
        enc.col_proj.weight.copy_(enc.row_proj.weight)
        enc.col_proj.bias.copy_(enc.row_proj.bias)
    m = torch.randn(5, cfg.block_size, cfg.rank, generator=_gen(3))
    x = m.reshape(5, -1)
    x_t = m.transpose(-1, -2).reshape(5, -1)
    f_row, f_col = enc.features(x)
    f_row_t, _ = enc.features(x_t)
    assert torch.allclose(f_col, f_row_t, atol=1e-6)
    assert not torch.allclose(f_col, f_row, atol=1e-3)
    # The column weights see element M[i, j] at input index j * block_size + i.
    expected = F.gelu(enc.col_proj(enc.in_norm(x).view(5, 4, 2).transpose(1, 2).reshape(5, 8)))
    assert torch.allclose(f_col, expected, atol=1e-6)


def test_encoder_output_matches_definition():
    enc = DenoisingEncoder(CFG)
    x = torch.randn(2, 4, CFG.token_dim, generator=_gen(4))
    s = torch.rand(2, 4, CFG.rank, generator=_gen(5))
    z, g = enc(x, s)
    f_row, f_col = enc.features(x)
    expected_g = torch.clamp(F.relu(enc.gate_mlp(s) + CFG.mu_gate), 0, 1)
    assert torch.equal(g, expected_g)
    assert torch.allclose(z, enc.out_norm((f_row + f_col) * expected_g), atol=1e-6)


def test_gate_range_ablation_and_closed_gate():
    x = torch.randn(3, 4, CFG.token_dim, generator=_gen(6))
    s = torch.rand(3, 4, CFG.rank, generator=_gen(7)) * 5
    _, g = DenoisingEncoder(CFG)(x, s)
    assert g.min() >= 0 and g.max() <= 1
    ablated = HyperNetConfig(block_size=6, rank=3, embed_dim=16, n_heads=2, ablate_denoise=True)
    _, g1 = DenoisingEncoder(ablated)(x, s)
    assert torch.equal(g1, torch.ones(3, 4, 16))
    closed = DenoisingEncoder(HyperNetConfig(block_size=6, rank=3, embed_dim=16, n_heads=2, mu_gate=-100.0))
    with torch.no_grad():
        closed.out_norm.bias.normal_(generator=_gen(8))
    z0, g0 = closed(x, s)
    assert torch.equal(g0, torch.zeros_like(g0))
    assert torch.allclose(z0, closed.out_norm.bias.expand_as(z0), atol=1e-6)


def test_every_part_gets_gradients_after_one_step():
    net = _net()
    inp = _inputs()
    w = torch.randn(3, 5, CFG.token_dim, generator=_gen(9))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):  # first step moves the zero-initialised last layer, second reaches everything
        opt.zero_grad()
        loss = (net.alpha * net(*inp).delta_tokens * w).sum()
        loss.backward()
        opt.step()
    named = dict(net.named_parameters())
    for name in ["encoder.in_norm.weight", "encoder.row_proj.weight", "encoder.col_proj.weight",
                 "encoder.gate_mlp.0.weight", "encoder.gate_mlp.2.weight", "encoder.out_norm.weight", "positions.weight",
                 "attention.in_proj_weight", "attention.out_proj.weight", "decoder.0.weight", "decoder.2.weight", "alpha"]:
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_padded_source_tokens_are_ignored():
    net = _net(live_decoder=True).eval()
    inp = list(_inputs())
    src, src_d, src_m = inp[3], inp[4], inp[5]
    base = net(*inp)
    changed = list(inp)
    changed[3] = torch.where(src_m[..., None], src, src * 7 + 3)
    changed[4] = torch.where(src_m[..., None], src_d, src_d + 9)
    other = net(*changed)
    assert torch.allclose(base.delta_tokens, other.delta_tokens, atol=1e-6)
    assert torch.allclose(base.attention, other.attention, atol=1e-7)
    real = list(inp)
    real[3] = src.clone()
    real[3][0, 0, :3] += 5  # a real token (a non-constant change: LayerNorm ignores constant shifts)
    assert not torch.allclose(base.delta_tokens, net(*real).delta_tokens, atol=1e-4)


@pytest.mark.parametrize("kwargs, flag", [
    ({"embed_dim": 18, "n_heads": 4}, "--embed-dim (18) must be divisible by the number of heads (4)"),
    ({"embed_dim": 18, "n_heads": 2}, "divisible by 4"),
    ({"embed_dim": 0}, "--embed-dim"),
    ({"n_heads": -1}, "--n-heads"),
    ({"block_size": 0}, "--block-size"),
    ({"max_positions": 0}, "--max-positions"),
])
def test_bad_config(kwargs, flag):
    base = {"block_size": 4, "rank": 2, "embed_dim": 16, "n_heads": 2}
    with pytest.raises(ConfigError, match=flag.replace("(", r"\(").replace(")", r"\)")):
        HyperNetConfig(**{**base, **kwargs})


def test_sequence_longer_than_max_positions():
    cfg = HyperNetConfig(block_size=4, rank=2, embed_dim=16, n_heads=2, max_positions=4)
    net = HyperNet(cfg)
    net(*_inputs(cfg, u=1, tt=4, ts=4))
    with pytest.raises(ConfigError, match="--max-positions"):
        net(*_inputs(cfg, u=1, tt=3, ts=5))


def test_token_dim_and_parameter_count():
    assert CFG.token_dim == 18
    net = _net()
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())
    assert count_parameters(net) > count_parameters(net.encoder) > 0
