"""The fine-tuning service's HTTP API. It never imports TensorFlow."""
