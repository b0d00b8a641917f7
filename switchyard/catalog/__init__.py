"""Model catalog: prices (per token and in other units), limits, capabilities and image-token rules per model."""

from switchyard.catalog.catalog import (
    ENDPOINTS,
    Catalog,
    CatalogError,
    ImageTokenSpec,
    PromptOverhead,
    ModelSpec,
    Prices,
    UnitPrice,
    load_catalog,
)

__all__ = ["ENDPOINTS", "Catalog", "CatalogError", "ImageTokenSpec", "ModelSpec", "Prices", "PromptOverhead", "UnitPrice",
           "load_catalog"]
