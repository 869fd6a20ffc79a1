"""Offline training and export of magorder's models.

Run ``python -m model_training --help``. The trainer builds its inputs with
`app.core.features`, the same module the service uses, so training and serving cannot skew.
"""
