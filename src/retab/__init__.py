"""RETAB: weak-shot semantic segmentation by transferring semantic affinity and boundary,
with the PSA stage it builds on. One module per stage under `retab.stages`, each with `main(argv)`."""

__version__ = "0.1.0"
