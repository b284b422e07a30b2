"""Deployment artefacts (images, compose, Kubernetes, Grafana) and the generator of the derived ones.

Top of the import direction: this package may import ``schemas`` and ``serve_app``; nothing imports it.
"""
