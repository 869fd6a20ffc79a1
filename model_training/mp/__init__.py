"""The Materials Project head: FM, NM, FiM or AFM from the composition and density.

Its stages: ``data`` (MP snapshots and their cleaning, with ``rule_labels``), ``config``,
``network``, ``fit`` (the networks), ``tree_blend`` and ``compiled_trees`` (the LightGBM
boosters compiled into the served graph), ``served_head`` (networks, trees, share and
temperature), ``confidence`` (the unsure-answer rule), ``evaluate``, ``card``, ``export``
and ``run`` (the ``train`` and ``evaluate`` commands); ``placeholder`` is its untrained
stand-in for the service.
"""
