"""PPO on gymnasium's ``CartPole-v1``, in plain PyTorch, small enough to train on one CPU core.

Algorithm: proximal policy optimisation (PPO, Schulman et al. 2017) with a clipped surrogate
objective, a learned state-value baseline, generalised advantage estimation (GAE, gamma 0.99,
lambda 0.95) and per-batch advantage normalisation. PPO is used rather than plain REINFORCE
because the clipped objective lets each batch of experience be reused for several epochs of
minibatch updates without the policy collapsing, so CartPole is solved in a few dozen updates
(seconds on a CPU) and the result is stable across seeds.

Each update plays ``NUM_ENVS`` complete episodes side by side (one per environment, stepped in a
batch through the policy), so no episode straddles two updates. That makes resuming exact and
simple: the state between updates is just the networks, the optimiser, the update counter and
one ``torch.Generator`` (action sampling and minibatch shuffling); environment resets are seeded
from ``(seed, update, env index)``. A run split by a restart reproduces an unbroken run bit for
bit. Episodes that hit the 500-step time limit are truncated, not terminated, and their last
state is bootstrapped from the value network.

Every ``EVAL_EVERY`` updates the greedy (argmax) policy is evaluated on ``EVAL_EPISODES``
episodes; training stops as soon as that mean return reaches ``SOLVED_RETURN``.

Public API: :class:`Policy`, :func:`train_policy`, :func:`evaluate`, :func:`act`. The module
writes no files and uses no network.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

ENV_ID = "CartPole-v1"
OBS_DIM = 4
NUM_ACTIONS = 2

# PPO hyperparameters.
NUM_ENVS = 8  # episodes played per update
GAMMA = 0.99
GAE_LAMBDA = 0.95
CLIP = 0.2
EPOCHS = 4
MINIBATCHES = 4
LEARNING_RATE = 2.5e-3
VALUE_COEF = 0.5
ENTROPY_COEF = 0.0
MAX_GRAD_NORM = 0.5

# Early stopping.
EVAL_EVERY = 2  # updates between greedy evaluations
EVAL_EPISODES = 10
SOLVED_RETURN = 475.0

# Offsets that keep training-episode seeds clear of the default evaluation seeds (10_000...).
_TRAIN_SEED_STRIDE = 1_000_003
_EARLY_EVAL_SEED = 900_000


def _mlp(out_features: int, hidden: int, head_scale: float = 1.0) -> nn.Sequential:
    """A 4-hidden-hidden-out tanh MLP; ``head_scale`` shrinks the output layer's initial weights."""
    head = nn.Linear(hidden, out_features)
    with torch.no_grad():
        head.weight.mul_(head_scale)
        head.bias.zero_()
    return nn.Sequential(
        nn.Linear(OBS_DIM, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), head
    )


class Policy(nn.Module):
    """Actor-critic for CartPole: ``forward`` maps observations ``[N, 4]`` to logits ``[N, 2]``.

    The actor is a 4-64-64-2 tanh MLP. A separate critic of the same shape (4-64-64-1) is kept in
    the same module, so one ``state_dict`` holds both; it is only used during training.
    """

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        # Small final actor layer: the initial policy is close to uniform.
        self.actor = _mlp(NUM_ACTIONS, hidden, head_scale=0.01)
        self.critic = _mlp(1, hidden)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Action logits ``[N, 2]`` for float32 observations ``[N, 4]``."""
        return self.actor(observations)

    def value(self, observations: torch.Tensor) -> torch.Tensor:
        """State-value estimates ``[N]``."""
        return self.critic(observations).squeeze(-1)


def act(policy: Policy, observations: torch.Tensor) -> torch.Tensor:
    """Greedy (argmax) action ids ``[N]`` for observations ``[N, 4]``."""
    with torch.no_grad():
        return policy(observations.to(torch.float32)).argmax(dim=-1)


def evaluate(policy: Policy, *, episodes: int = 20, seed: int = 10_000) -> float:
    """Mean undiscounted return of the greedy policy over ``episodes`` episodes of CartPole-v1.

    Episode ``i`` is reset with seed ``seed + i``; episodes end at termination or at the
    500-step time limit. The episodes are played side by side, batched through the policy.
    """
    envs = [gym.make(ENV_ID) for _ in range(episodes)]
    try:
        obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
        returns = np.zeros(episodes, dtype=np.float64)
        running = np.ones(episodes, dtype=bool)
        while running.any():
            idx = np.flatnonzero(running)
            actions = act(policy, torch.as_tensor(obs[idx], dtype=torch.float32)).numpy()
            for j, a in zip(idx, actions, strict=True):
                next_obs, reward, terminated, truncated, _ = envs[j].step(int(a))
                returns[j] += float(reward)
                obs[j] = next_obs
                if terminated or truncated:
                    running[j] = False
        return float(returns.mean())
    finally:
        for env in envs:
            env.close()


def _collect(
    policy: Policy, envs: list[gym.Env], seeds: list[int], generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Play one full episode per environment with the stochastic policy; return a GAE batch."""
    n = len(envs)
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)])
    traj: list[dict[str, list[Any]]] = [
        {"obs": [], "act": [], "logp": [], "val": [], "rew": []} for _ in range(n)
    ]
    bootstrap = [0.0] * n  # value of the state after the last step (non-zero only if truncated)
    running = np.ones(n, dtype=bool)
    with torch.no_grad():
        while running.any():
            idx = np.flatnonzero(running)
            obs_t = torch.as_tensor(obs[idx], dtype=torch.float32)
            logp_all = torch.log_softmax(policy(obs_t), dim=-1)
            actions = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(-1)
            logps = logp_all.gather(-1, actions[:, None]).squeeze(-1)
            values = policy.value(obs_t)
            for k, j in enumerate(idx):
                next_obs, reward, terminated, truncated, _ = envs[j].step(int(actions[k]))
                t = traj[j]
                t["obs"].append(obs[j].copy())
                t["act"].append(int(actions[k]))
                t["logp"].append(float(logps[k]))
                t["val"].append(float(values[k]))
                t["rew"].append(float(reward))
                obs[j] = next_obs
                if terminated or truncated:
                    running[j] = False
                    if truncated and not terminated:
                        last = torch.as_tensor(next_obs, dtype=torch.float32)[None]
                        bootstrap[j] = float(policy.value(last)[0])

    advantages: list[np.ndarray] = []
    for t, last_value in zip(traj, bootstrap, strict=True):
        rew = np.asarray(t["rew"], dtype=np.float64)
        val = np.append(np.asarray(t["val"], dtype=np.float64), last_value)
        deltas = rew + GAMMA * val[1:] - val[:-1]
        adv = np.zeros_like(rew)
        acc = 0.0
        for i in range(len(rew) - 1, -1, -1):
            acc = deltas[i] + GAMMA * GAE_LAMBDA * acc
            adv[i] = acc
        advantages.append(adv)

    adv_t = torch.as_tensor(np.concatenate(advantages), dtype=torch.float32)
    val_t = torch.as_tensor(np.concatenate([t["val"] for t in traj]), dtype=torch.float32)
    batch = {
        "obs": torch.as_tensor(np.concatenate([t["obs"] for t in traj]), dtype=torch.float32),
        "act": torch.as_tensor(np.concatenate([t["act"] for t in traj]), dtype=torch.int64),
        "logp": torch.as_tensor(np.concatenate([t["logp"] for t in traj]), dtype=torch.float32),
        "adv": adv_t,
        "ret": adv_t + val_t,
    }
    episode_returns = [float(sum(t["rew"])) for t in traj]
    return batch, episode_returns


def _ppo_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator,
) -> float:
    """A few epochs of clipped-surrogate minibatch steps; returns the mean minibatch loss."""
    size = batch["obs"].shape[0]
    mb_size = max(1, size // MINIBATCHES)
    losses: list[float] = []
    for _ in range(EPOCHS):
        perm = torch.randperm(size, generator=generator)
        for start in range(0, size, mb_size):
            mb = perm[start : start + mb_size]
            if mb.numel() < 2:
                continue
            adv = batch["adv"][mb]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            logp_all = torch.log_softmax(policy(batch["obs"][mb]), dim=-1)
            logp = logp_all.gather(-1, batch["act"][mb, None]).squeeze(-1)
            ratio = (logp - batch["logp"][mb]).exp()
            policy_loss = -torch.min(ratio * adv, ratio.clamp(1.0 - CLIP, 1.0 + CLIP) * adv).mean()
            value_loss = (policy.value(batch["obs"][mb]) - batch["ret"][mb]).pow(2).mean()
            entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
            loss = policy_loss + VALUE_COEF * value_loss - ENTROPY_COEF * entropy
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            losses.append(loss.item())
    return float(np.mean(losses)) if losses else 0.0


def train_policy(
    *,
    seed: int,
    max_updates: int,
    on_update: Callable[[int, dict[str, float]], None] | None = None,
    state: dict | None = None,
) -> tuple[Policy, dict]:
    """Train a :class:`Policy` on CartPole-v1 with PPO.

    One update plays ``NUM_ENVS`` full episodes and then takes PPO steps on them. After each
    update ``on_update(update, {"meanReturn": ..., "loss": ...})`` is called, where ``update``
    counts completed updates from 1 and ``meanReturn`` is the mean return of that update's
    training episodes. Every ``EVAL_EVERY`` updates the greedy policy is evaluated on
    ``EVAL_EPISODES`` episodes and training stops once it scores ``SOLVED_RETURN`` or more.

    ``max_updates`` caps the total number of updates, counting those done before a resume.
    ``state`` is ``info["state"]`` from an earlier call (e.g. loaded after a pod restart with
    ``torch.load``); training carries on from its update counter and reproduces the run it came
    from exactly. It must have been made with the same ``seed``. A state that is already solved
    returns at once.

    Returns ``(policy, info)``; ``info`` holds ``"state"`` (resumable: policy and optimiser
    ``state_dict``s, update counter, generator state), ``"updates"`` (completed updates in
    total), ``"solved"`` (bool) and ``"evalReturn"`` (last periodic greedy evaluation, or
    ``None`` if none ran).
    """
    if max_updates < 0:
        raise ValueError("max_updates must be >= 0")

    # Initialise the weights from the seed without disturbing the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = Policy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=LEARNING_RATE, eps=1e-5)
    generator = torch.Generator().manual_seed(seed)
    update = 0
    solved = False
    eval_return: float | None = None

    if state is not None:
        if int(state["seed"]) != seed:
            raise ValueError(f"state was made with seed {state['seed']}, not {seed}")
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        update = int(state["update"])
        solved = bool(state["solved"])
        eval_return = state["evalReturn"]

    envs = [gym.make(ENV_ID) for _ in range(NUM_ENVS)]
    try:
        while update < max_updates and not solved:
            seeds = [seed * _TRAIN_SEED_STRIDE + update * NUM_ENVS + i for i in range(NUM_ENVS)]
            batch, episode_returns = _collect(policy, envs, seeds, generator)
            loss = _ppo_update(policy, optimizer, batch, generator)
            update += 1
            if on_update is not None:
                on_update(update, {"meanReturn": float(np.mean(episode_returns)), "loss": loss})
            if update % EVAL_EVERY == 0:
                eval_return = evaluate(
                    policy, episodes=EVAL_EPISODES, seed=_EARLY_EVAL_SEED + update * 100
                )
                solved = eval_return >= SOLVED_RETURN
    finally:
        for env in envs:
            env.close()

    new_state = {
        "seed": seed,
        "update": update,
        "solved": solved,
        "evalReturn": eval_return,
        "policy": copy.deepcopy(policy.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "generator": generator.get_state(),
    }
    info = {"state": new_state, "updates": update, "solved": solved, "evalReturn": eval_return}
    return policy, info
