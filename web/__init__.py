"""The thin web layer: Quart-Trio routes served by Hypercorn's Trio worker, and the CLI."""
