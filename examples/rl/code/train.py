"""The reinforcement-learning example's training program: `python train.py`, run by the
TrainingJob `cartpole` in its worker pod, with the platform around it through tauon_runtime.sdk.

It trains cartpole.py's PPO policy on gymnasium's CartPole-v1 (the environment is the data: the
TrainingJob has no Dataset), reports each update's mean training return, checkpoints every 10
updates (a restarted pod goes on from there), and stops when the greedy policy is solved or
`hyperparameters.epochs` updates are spent. The exported policy's metric is its mean return
over 100 greedy episodes, gated at 195 (CartPole's classic bar) by the TrainingJob's
`evaluation`.
"""

from __future__ import annotations

import cartpole

from tauon_runtime import sdk

CHECKPOINT_EVERY = 10  # updates
EVALUATION_EPISODES = 100


def main() -> None:
    with sdk.run() as run:
        hp = run.hyperparameters
        saved = run.resume()
        state = saved["ppo"] if saved else None

        def on_update(update: int, metrics: dict[str, float]) -> None:
            run.report(epoch=update, total_epochs=hp.epochs, metrics=metrics)

        while True:
            done = state["update"] if state else 0
            target = min(hp.epochs, done + CHECKPOINT_EVERY)
            policy, info = cartpole.train_policy(
                seed=hp.seed, max_updates=target, on_update=on_update, state=state
            )
            state = info["state"]
            run.checkpoint({"ppo": state}, step=info["updates"])
            if info["solved"] or info["updates"] >= hp.epochs:
                break

        run.export(
            policy,
            metrics={
                "meanReturn": cartpole.evaluate(policy, episodes=EVALUATION_EPISODES),
                "updates": float(info["updates"]),
            },
            card={"environment": "CartPole-v1", "observation": 4, "actions": ["left", "right"]},
        )


if __name__ == "__main__":
    main()
