"""A one-layer objective for tests of the training loop itself (``hf_runtime.trainer.train``): its step sums the
gradient across processes, as every objective does, and calls ``on_step(step)`` after the backward pass."""

import torch

from hf_runtime.distributed import sum_gradients
from hf_runtime.trainer import StepLosses


class LinearObjective:
    keep_grad_buffers = False

    def __init__(self, on_step):
        torch.manual_seed(0)
        self.layer, self.on_step = torch.nn.Linear(3, 1), on_step

    def parameters(self):
        return list(self.layer.parameters())

    def prepare(self):
        pass

    def step(self, step, batches):
        loss = self.layer(torch.ones(1, 3)).pow(2).sum()
        loss.backward()
        sum_gradients(self.parameters())  # a collective in every step of a distributed run
        self.on_step(step)
        return StepLosses(lm=float(loss.detach()))

    def state_dict(self):
        return {"layer": self.layer.state_dict()}

    def load_state_dict(self, state):
        self.layer.load_state_dict(state["layer"])

    def step_done(self):
        pass
