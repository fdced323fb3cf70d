"""``vlpart quickstart``: the paper's cross-category experiment in miniature on a synthetic parts
world (:mod:`~vlpart.apps.quickstart.synth`), run by :mod:`~vlpart.apps.quickstart.run`."""
