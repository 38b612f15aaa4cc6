"""Training (``alosmap.train``): datasets, losses, pretraining and finetuning.

* ``dataset`` builds a dataset directory: one record and writer, one request
  (:class:`~alosmap.train.dataset.request.BuildRequest`), two sources (the paper's
  JAXA scenes and tiles; your (image, label) pairs and legend); ``data`` reads it
  (:class:`~alosmap.train.data.TrainingData`, the torch dataset).
* ``requests`` holds what the command line asks of the runs
  (:class:`~alosmap.train.requests.RunOptions`); ``defaults`` the defaults.
* ``engine`` is the run skeleton (device, AMP, DDP, resume, epoch loop, logs);
  ``finetune`` and ``pretrain`` are its two runs, ``losses``, ``mixmae`` (with
  ``vit_block``, its decoder block), ``optim`` and ``checkpoint`` their parts;
  ``distributed`` the process-group helpers.
* ``evaluate`` scores a model file on a dataset split; ``errors`` holds the errors.
"""
