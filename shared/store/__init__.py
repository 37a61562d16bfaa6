"""shared/store package."""
