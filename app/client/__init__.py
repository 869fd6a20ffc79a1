"""magorder from Python: the bundled model in this process, or a running service over HTTP.

`app.client.api` holds the two entry points (re-exported as ``import magorder``);
`app.client.remote` reaches a service for them and for the command line. What predicts in
this process, and the columns of the results, are the core's (`app.core.backend`,
`app.core.columns`).
"""
