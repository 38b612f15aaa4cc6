"""Training (``alosmap.train``): datasets, losses, pretraining and finetuning.

* ``build_dataset`` writes a dataset directory from scenes and label tiles;
  ``data`` reads it (:class:`~alosmap.train.data.TrainingData`, the torch dataset).
* ``engine`` is the run skeleton (device, AMP, DDP, resume, epoch loop, logs);
  ``finetune`` and ``pretrain`` are its two runs, ``losses``, ``mixmae`` (with
  ``vit_block``, its decoder block), ``optim`` and ``checkpoint`` their parts;
  ``distributed`` the process-group helpers.
* ``evaluate`` scores a model file on a dataset split; ``errors`` holds the errors.
"""
