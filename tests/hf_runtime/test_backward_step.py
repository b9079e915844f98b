"""--step-in-backward: the same training as clip-then-step, without the whole gradient at once."""

import pytest
import torch
from safetensors.torch import load_file

from hf_common.errors import ConfigError
from hf_fuse.job import FuseJob
from hf_fuse.methods.hypernet import HyperNetSettings
from hf_fuse.run import run
from hf_runtime.backward_step import BackwardStepper
from hf_runtime.trainer import TrainSettings


def _two_layer_step(stepper_clip: float | None, optimizer_name: str):
    """One step of a small two-layer net: ordinary clip-then-step, or through a BackwardStepper."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    params = list(net.parameters())
    make = {"adamw": lambda: torch.optim.AdamW(params, lr=0.1), "adafactor": lambda: torch.optim.Adafactor(params, lr=0.1),
            "sgd": lambda: torch.optim.SGD(params, lr=0.1)}
    optimizer = make[optimizer_name]()
    x = torch.randn(4, 6)
    clip = 0.05 if stepper_clip is None else stepper_clip
    loss = net(x).pow(2).sum() * 10
    if stepper_clip is None:
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        optimizer.step()
    else:
        stepper = BackwardStepper(optimizer, params, clip)
        stepper.backward([loss], [torch.ones_like(loss)])
        norm = stepper.grad_norm
        assert all(p.grad is None for p in params)  # every gradient freed once used
    return [p.detach().clone() for p in params], norm


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor", "sgd"])
def test_stepper_equals_clip_then_step(optimizer):
    expected, norm = _two_layer_step(None, optimizer)
    got, stepper_norm = _two_layer_step(0.05, optimizer)
    assert norm > 0.05  # the clip really bites
    assert stepper_norm == pytest.approx(norm, rel=1e-6)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    if optimizer == "sgd":  # (the adaptive optimisers' first step does not depend on the gradient's scale)
        unclipped, _ = _two_layer_step(float("inf"), optimizer)
        assert any(not torch.allclose(a, b) for a, b in zip(unclipped, expected))  # clipping changed the step


def _job(fusion, out, method="hypernet", settings=None, **train):
    return FuseJob(plans=[fusion["plan"]], base_model=fusion["base"], replay=[fusion["replay"]], output=out,
                   method=method,
                   settings=settings or {"hypernet": HyperNetSettings(embed_dim="auto", n_heads=2, n_proj=64)},
                   train=TrainSettings(**{"grad_accum": 2, "checkpoint_every": 2, **train}))


@pytest.mark.parametrize("clip", [1.0, 0.0])
def test_hypernet_fusion_in_backward_equals_the_ordinary_loop(fusion, tmp_path, clip):
    common = dict(max_steps=4, lr=3e-3, optimizer="adafactor", max_grad_norm=clip)
    ordinary = run(_job(fusion, tmp_path / "ordinary", **common))
    lean = run(_job(fusion, tmp_path / "lean", step_in_backward=True, **common))
    a, b = load_file(tmp_path / "ordinary/adapter_model.safetensors"), load_file(tmp_path / "lean/adapter_model.safetensors")
    target = load_file(fusion["target"] / "adapter_model.safetensors")
    assert any(not torch.equal(a[k], target[k]) for k in target)  # it trained
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    norms = [(x["grad_norm"], y["grad_norm"]) for x, y in zip(ordinary["tasks"][0]["history"], lean["tasks"][0]["history"])]
    assert all(y == pytest.approx(x, rel=1e-5) and x > 0 for x, y in norms)
    assert lean["settings"]["train"]["step_in_backward"] is True


def test_in_backward_resume_equals_an_uninterrupted_run(fusion, tmp_path):
    common = dict(max_steps=4, lr=3e-3, optimizer="adafactor", step_in_backward=True)
    run(_job(fusion, tmp_path / "straight", **common))

    def interrupt(kind, payload):
        if kind == "step" and payload[1]["step"] == 2:
            raise KeyboardInterrupt

    job = _job(fusion, tmp_path / "resumed", **common)
    with pytest.raises(KeyboardInterrupt):
        run(job, interrupt)
    assert torch.load(tmp_path / "resumed.ckpt/task0.pt", weights_only=True)["state"]["step"] == 2
    run(FuseJob(**{**job.__dict__, "resume": True}))
    straight, resumed = (load_file(tmp_path / f"{n}/adapter_model.safetensors") for n in ("straight", "resumed"))
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-7)


def test_a_method_without_hypernets_is_refused_before_anything_loads(fusion, tmp_path):
    from hf_fuse.methods.project import ProjectSettings

    job = _job(fusion, tmp_path / "out", method="project", settings={"project": ProjectSettings(source_models={0: "x"})},
               step_in_backward=True)
    with pytest.raises(ConfigError, match="--step-in-backward: --method project trains no HyperNet"):
        run(job)
    assert not (tmp_path / "out").exists()


def test_a_ctrl_c_during_the_updates_is_held_until_every_parameter_is_updated():
    import os
    import signal

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.1)
    step = optimizer.step

    def step_then_interrupt(*args, **kwargs):
        result = step(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C after the first parameter's update
        return result

    optimizer.step = step_then_interrupt
    stepper = BackwardStepper(optimizer, params, float("inf"))
    loss = net(torch.randn(4, 6)).pow(2).sum()
    # Python's own handler, as in a terminal (a shell's background job starts with SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stepper.backward([loss], [torch.ones_like(loss)])  # no KeyboardInterrupt escapes mid-update
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back
    finally:
        signal.signal(signal.SIGINT, outer)
    assert stepper.interrupted
    assert all(not torch.equal(p, b) for p, b in zip(params, before))  # every parameter was updated
