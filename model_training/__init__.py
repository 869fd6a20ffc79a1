"""Offline training and export of magorder's models.

Run ``python -m model_training --help``. The trainer builds its inputs with
`app.core.features`, the same module the service uses, so training and serving cannot skew.

Layout: the modules at the top level are shared by every head: ``data`` (labelled rows and
their cleaning), ``split``, ``network`` (derived features, hidden stack, the density-free
network), ``members`` (fitting an ensemble), ``baselines``, ``metrics``, ``strategy``,
``card`` and ``export`` (writing and sealing a head's directory) and ``pipeline`` (what every
command does alike). Each head is a subpackage with the same stage names, holding only what
is particular to it: ``mp`` (the Materials Project head), ``experiment`` and ``density``;
each has ``network``, ``evaluate``, ``card``, ``export`` and ``run`` (its command), and
``data`` where it reads its own snapshot. A new head goes in a new subpackage of that shape.
Experiments no served model uses live outside the package, in ``research/``.
"""
