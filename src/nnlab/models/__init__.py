"""Model families. Importing this package registers every family's sizes."""
from nnlab.models import cnn, mlp  # noqa: F401  (imported for their @register side effect)
from nnlab.models.registry import create_model, list_models, register

__all__ = ["create_model", "list_models", "register"]
