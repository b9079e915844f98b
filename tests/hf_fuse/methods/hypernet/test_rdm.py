import pytest
import torch

from hf_fuse.methods.hypernet.rdm import rdm_loss


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def z_normal() -> torch.Tensor:
    return torch.randn(1024, 16, generator=_gen(100))


def test_matching_distribution_gives_small_loss(z_normal):
    loss = rdm_loss(z_normal, n_proj=256, generator=_gen(0))
    assert 0.0 <= loss.item() < 0.02  # measured 0.002-0.003 over seeds


@pytest.mark.parametrize("transform", [lambda z: z + 3.0, lambda z: z * 5.0])
def test_mismatched_distribution_gives_large_loss(z_normal, transform):
    base = rdm_loss(z_normal, n_proj=256, generator=_gen(0)).item()
    other = rdm_loss(transform(z_normal), n_proj=256, generator=_gen(0)).item()
    assert other > 1.0  # measured ~7-8
    assert other > 10 * base


def test_target_mean_is_honoured(z_normal):
    shifted = z_normal + 3.0
    assert rdm_loss(shifted, mu_target=3.0, n_proj=256, generator=_gen(0)).item() < 0.05  # measured ~0.006
    assert rdm_loss(shifted, mu_target=0.0, n_proj=256, generator=_gen(0)).item() > 1.0


def test_non_negative_and_deterministic():
    z = torch.randn(64, 8, generator=_gen(1)) * 2 - 1
    a = rdm_loss(z, n_proj=128, generator=_gen(5))
    b = rdm_loss(z, n_proj=128, generator=_gen(5))
    c = rdm_loss(z, n_proj=128, generator=_gen(6))
    assert a.item() >= 0.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gradient_flows_to_z():
    z = (torch.randn(128, 8, generator=_gen(2)) + 1.0).requires_grad_(True)
    loss = rdm_loss(z, n_proj=64, generator=_gen(3))
    loss.backward()
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0
    # ReLU rectification: entries that are negative get no gradient
    assert torch.all(z.grad[z.detach() < 0] == 0)


def test_bad_input_rejected():
    with pytest.raises(ValueError):
        rdm_loss(torch.randn(4, 3, 2))
    with pytest.raises(ValueError):
        rdm_loss(torch.randn(4, 3), n_proj=0)
