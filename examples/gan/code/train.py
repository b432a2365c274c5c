"""The GAN example's training program: `python train.py`, run by the TrainingJob `gan` in its
worker pod, with the platform around it through tauon_runtime.sdk.

It trains dcgan.py's DCGAN on the Dataset's digits (the train split), checkpoints every 10
epochs (a restarted pod goes on from there), scores the generator with the Inception Score
under a small digits classifier trained on the same split (checked on the test split), and
exports the generator: its weights and a model card, gated by the TrainingJob's
`evaluation` (inceptionScore >= 5; 1.0 is noise, ~9.5 the real test digits).
"""

from __future__ import annotations

import dcgan
import torch

from tauon_runtime import sdk

CHECKPOINT_EVERY = 10  # epochs
SAMPLES = 1000  # generated digits the score is taken over


def main() -> None:
    with sdk.run() as run:
        hp = run.hyperparameters
        train, test = run.split("train"), run.split("test")
        saved = run.resume()
        state, done = (saved["gan"], saved["epoch"]) if saved else (None, 0)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.report(epoch=epoch, total_epochs=hp.epochs, metrics=metrics)

        generator = None
        while generator is None or done < hp.epochs:
            target = min(hp.epochs, done + CHECKPOINT_EVERY)
            generator, info = dcgan.train_gan(
                train.x,
                seed=hp.seed,
                epochs=target,
                batch_size=hp.batch_size,
                on_epoch=on_epoch,
                state=state,
            )
            state, done = info["state"], info["epochs"]
            run.checkpoint({"epoch": done, "gan": state}, step=done)

        classifier = dcgan.train_classifier(train.x, train.y, seed=hp.seed)
        with torch.no_grad():
            predicted = classifier(test.x.float()).argmax(dim=1)
        accuracy = (predicted == test.y).float().mean().item()
        images = dcgan.generate(generator, SAMPLES, seed=hp.seed)
        run.export(
            generator,
            metrics={
                "inceptionScore": dcgan.inception_score(images, classifier),
                "realInceptionScore": dcgan.inception_score(test.x, classifier),
                "classifierAccuracy": accuracy,
            },
            card={"latent": dcgan.LATENT, "imageShape": [1, 8, 8]},
        )


if __name__ == "__main__":
    main()
