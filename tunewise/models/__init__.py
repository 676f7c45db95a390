"""Base models and tokenizers: built-in offline models, local folders and hub ids."""

from tunewise.models.loading import load_model, load_tokenizer, resolve_model

__all__ = ["load_model", "load_tokenizer", "resolve_model"]
