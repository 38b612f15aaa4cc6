"""What the training tests share: the options of their short runs, tiny datasets."""

import json
from pathlib import Path

import numpy as np

#: A short run: tiny preset, CPU, no loader workers, a high LR, one warm-up epoch.
FAST = dict(
    preset="tiny", warmup_epochs=1, batch_size=4, workers=0, device="cpu", lr=2e-3
)

#: The same as CLI options of ``alosmap train finetune`` (without the preset, which
#: a run from ``--init-from`` takes from its model).
FAST_CLI = ("--workers", "0", "--device", "cpu", "--lr", "2e-3")

#: A user's three-class legend over the JAXA codes of ``conftest.TRAINING_SIGMA0``.
LANDCOVER3 = {
    "name": "landcover3",
    "nodata": 0,
    "ignore": [0],
    "classes": [
        {"name": "Water", "values": [1], "code": 1, "color": "#0050ff"},
        {"name": "Urban", "values": [2], "code": 2, "color": "#ff0000"},
        {"name": "Vegetation", "values": [4, 5, 8], "code": 3, "color": "#00a000"},
    ],
}


def to_own_legend(root: Path, legend_data: dict | None = None, radiometry=None) -> Path:
    """Turn a ``write_training_data`` dataset into one of the user's labels.

    Its labels become training indices of the legend (255 = no label), and
    ``dataset.json`` records the legend, ``"labels": "index"``, the legend's class
    counts and (when given) a ``radiometry`` record.
    """
    from alosmap.classes import Legend
    from alosmap.train.data import TrainingData

    legend = Legend.from_dict(legend_data or LANDCOVER3)
    data = TrainingData(root)
    labels = legend.labels_to_index(np.asarray(data.labels))
    labels[labels == 254] = 255
    del data
    np.save(root / "labels.npy", labels)
    meta = json.loads((root / "dataset.json").read_text())
    train = [r for r in TrainingData(root).indices("train")]
    y = labels[train]
    k = len(legend.classes)
    counts = np.bincount(y[y != 255].ravel(), minlength=k)[:k].tolist()
    meta.update(
        legend=legend.to_dict(), labels="index", class_counts={legend.name: counts}
    )
    if radiometry is not None:
        meta["radiometry"] = radiometry
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root
