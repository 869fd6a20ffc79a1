"""The web page for people: ``GET /`` and its static files, all served by the app itself."""
