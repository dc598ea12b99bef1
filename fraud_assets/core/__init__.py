"""Plain-Python core of the platform: schema, data, features, training, registry.

Nothing in this package imports Dagster or BentoML, so the pipelines and the
scoring service share one implementation of every computation.
"""
