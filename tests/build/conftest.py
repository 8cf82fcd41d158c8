"""Build-area fixtures: private_cache and tiny_llama_hf live in tests/conftest.py (shared)."""
