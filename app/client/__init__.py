"""magorder from Python: the bundled model in this process, or a running service over HTTP.

`app.client.api` holds the two entry points (re-exported as ``import magorder``);
`app.client.backends` what predicts for them and for the command line; `app.client.columns`
the flat table of results they and ``magorder predict`` all write.
"""
