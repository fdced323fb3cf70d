"""Evaluation: COCO/LVIS box and mask AP of results files (:mod:`~vlpart.evaluation.coco_eval`)
and of a model run over a dataset (:mod:`~vlpart.evaluation.model_eval`)."""
