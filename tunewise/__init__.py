"""tunewise: fine-tune language models the way best practice says it should be done."""

__version__ = "0.1.0"
