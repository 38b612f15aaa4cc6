"""What the training tests share: the options of their short runs."""

#: A short run: tiny preset, CPU, no loader workers, a high LR, one warm-up epoch.
FAST = dict(
    preset="tiny", warmup_epochs=1, batch_size=4, workers=0, device="cpu", lr=2e-3
)
