"""Model catalog: prices, limits, capabilities and image-token rules per model."""

from switchyard.catalog.catalog import (
    Catalog,
    CatalogError,
    ImageTokenSpec,
    PromptOverhead,
    ModelSpec,
    Prices,
    load_catalog,
)

__all__ = ["Catalog", "CatalogError", "ImageTokenSpec", "ModelSpec", "Prices", "PromptOverhead", "load_catalog"]
