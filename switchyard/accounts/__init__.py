"""Who is calling: API keys and what they may do."""
