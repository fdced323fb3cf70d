"""Export of a detector to other runtimes: ONNX (:mod:`~vlpart.export.onnx`). Nothing here
imports :mod:`vlpart.inference`; the onnxruntime backend that runs an export lives there."""
