"""Inference: :class:`~vlpart.inference.segmenter.PartSegmenter` over one backend contract
(:mod:`~vlpart.inference.backends`), the :class:`~vlpart.inference.prediction.Prediction`
record, folders of files (:mod:`~vlpart.inference.files`), video
(:mod:`~vlpart.inference.video`) and SAM refinement (:mod:`~vlpart.inference.refine`)."""
