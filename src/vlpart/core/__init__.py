"""The layer everything else stands on, with no model in it: vocabularies and their names
(:mod:`~vlpart.core.vocab`), COCO files (:mod:`~vlpart.core.coco`), file I/O and atomic writes
(:mod:`~vlpart.core.fileio`), the experiment config (:mod:`~vlpart.core.config`), weight files
and downloads (:mod:`~vlpart.core.weights`), user-facing errors (:mod:`~vlpart.core.errors`)
and the process group (:mod:`~vlpart.core.distributed`)."""
