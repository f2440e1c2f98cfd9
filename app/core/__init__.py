"""What the API and the workers share: settings, the job contract, the store, paths.

Imports neither FastAPI nor TensorFlow (tests/unit/test_boundaries.py checks), so a worker can
use it without the HTTP layer and the API without the training stack.
"""
