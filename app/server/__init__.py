"""How the server process talks HTTP to its clients, beneath the ASGI app."""
