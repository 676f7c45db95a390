"""Base models tunewise can build offline: the tiny test model and SmolLM2 from its PyPI wheel. Loading any model
(these, a local folder or a hub id) is tunewise.lm.loading."""
