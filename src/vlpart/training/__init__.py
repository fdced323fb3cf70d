"""Training: the joint multi-source loop (:mod:`~vlpart.training.train`) and its atomic,
resumable checkpoints (:mod:`~vlpart.training.checkpoints`)."""
