"""Datasets: registry, manifests, adapters, preprocessing, pair lists, samplers and the synthetic suite."""
