"""``build-dataset``: one dataset record, one writer, two sources.

* :mod:`.record`: :class:`~.record.DatasetRecord` (what ``dataset.json`` holds),
  the manifest rows and :func:`~.record.write_dataset`, the one writer;
* :mod:`.jaxa`: the paper's source, ALOS-2 scenes + JAXA HRLULC tiles (labels
  stored as JAXA codes: the JAXA legend serves every bundled task);
* :mod:`.general`: the user's (image, label) pairs + a legend (:mod:`.pairs`,
  :mod:`.label_values`, :mod:`.splits`, :mod:`.general_summary`);
* shared by both: :mod:`.images` (reading the images), :mod:`.patch_store`
  (memory-mapped patches, statistics), :mod:`.label_checks` (labels against the
  radar, also ``alosmap train inspect``).

``docs/dataset_format.md`` describes the files.
"""
