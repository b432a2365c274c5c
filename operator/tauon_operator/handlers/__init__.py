"""Kopf handlers: thin. Watch events feed the cache and enqueue a level-based reconcile of the
custom resource they concern; one module per kind holds that kind's reconcile."""
