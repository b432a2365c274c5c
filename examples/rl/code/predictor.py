"""The reinforcement-learning example's predictor class: ModelDeployment `cartpole` serves the
policy through it.

`/v1/predict` takes `{"instances": [[x, x_dot, theta, theta_dot], ...]}` (CartPole-v1's
observation) and answers the greedy action for each: 0 pushes the cart left, 1 right. The OIP
v2 endpoint takes an FP32 tensor `[N, 4]` and answers an INT64 tensor `[N]`.
"""

from __future__ import annotations

import math
from typing import Any

import cartpole
import numpy as np
import torch

from tauon_runtime import sdk

OBSERVATION = 4


def _observation(instance: Any) -> list[float]:
    values = instance.tolist() if isinstance(instance, np.ndarray) else instance
    if (
        not isinstance(values, list)
        or len(values) != OBSERVATION
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        or not all(math.isfinite(v) for v in values)
    ):
        raise ValueError(
            "each instance is an observation of 4 finite numbers: "
            "[cart position, cart velocity, pole angle, pole angular velocity]"
        )
    return [float(v) for v in values]


class Policy:
    example = [0.0, 0.0, 0.0, 0.0]  # the server's warm-up request
    classes = ["0", "1"]  # the actions, which feedback may name

    def load(self, model_dir: str) -> None:
        _, weights = sdk.load_weights(model_dir)  # checked against its digest, no pickle
        self.policy = cartpole.Policy()
        self.policy.load_state_dict(weights)
        self.policy.eval()

    def predict(self, instances: list[Any]) -> list[Any]:
        observations = torch.tensor([_observation(i) for i in instances], dtype=torch.float32)
        actions = cartpole.act(self.policy, observations).numpy().astype(np.int64)
        return [
            a if isinstance(i, np.ndarray) else int(a)
            for i, a in zip(instances, actions, strict=True)
        ]
