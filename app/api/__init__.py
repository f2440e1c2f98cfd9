"""The HTTP layer (FastAPI): routes, auth, limits, errors, metrics, the dashboard.

Never imports TensorFlow or `worker` (tests/unit/test_boundaries.py checks).
"""
