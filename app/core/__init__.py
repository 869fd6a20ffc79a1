"""Domain logic of magorder: features, model cards, heads, predictions, results and screening.

Nothing here knows about HTTP, the command line or the client: every edge calls down into it,
and it imports from none of them.
"""
