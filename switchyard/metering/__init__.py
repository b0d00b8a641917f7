"""Counting what a request uses: tokens now; images, cache and cost as they arrive."""
