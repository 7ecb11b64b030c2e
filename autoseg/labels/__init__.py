"""The label space: what mask values mean, which classes exist, and the policy built on them.

``masks`` turns raw mask values into training targets (one ``IGNORE_INDEX``), ``colors``
maps color masks to classes, and ``problem`` decides binary or multi-class and owns what
follows from it: the number of outputs, the default metric, the metric accumulator.
"""
