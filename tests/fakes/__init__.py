"""Local test doubles that speak real wire formats (LLM vendors, webhook receivers)."""
