"""The HTTP API: a Quart-Trio app built by :func:`etrans.api.app.create_app`."""
