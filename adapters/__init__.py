"""Checkpoint series from other ecosystems, installed as ``complexity_zoo.adapters``.

Each adapter imports its ecosystem's library lazily, inside functions, so importing
complexity_zoo never pulls in transformers, timm or lightning.
"""
