"""The built-in NOC dashboard: a static page at ``/`` that reads the ``/v1`` API."""
