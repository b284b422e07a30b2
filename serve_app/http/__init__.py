"""Pieces of the HTTP ingress (``serve_app/http_api.py``): error shape, body and key gates, metrics, rendering."""
