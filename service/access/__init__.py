"""Who may do what: API keys (who is calling), stream tokens (what a browser's EventSource
shows instead of a key). No HTTP here: ``api/auth.py`` reads the credentials from a request
and asks this package; SQL stays in ``store/keys.py``."""
