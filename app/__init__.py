"""The fine-tuning service's API side: `core` (shared with the workers) and `api` (HTTP)."""
