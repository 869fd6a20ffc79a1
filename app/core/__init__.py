"""Domain logic of magorder: the feature contract, the model card and the predictor.

Nothing here knows about HTTP; the API layer turns these errors and results into responses.
"""
