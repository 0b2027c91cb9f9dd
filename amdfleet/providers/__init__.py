"""Pulumi dynamic providers, one module per resource.

Every provider is stateless: instances are pickled (dill) into each resource's state and
run in the Pulumi dynamic-provider host, several threads at once, so they hold no
client, connection or secret and never mutate ``self``. Connections are opened inside
each method and every remote call has a timeout. ``create`` is all-or-nothing (it
cleans up what it made before raising), ``delete`` is idempotent, and ``read``
re-collects what the resource observes so ``pulumi refresh`` shows drift.

Each module defines one frozen props model (:class:`~amdfleet.providers.props.ProviderProps`)
used on both sides of the pickle boundary: the components build it, the resource turns it
into its inputs, and every provider method that acts parses its properties into it once.

While they work, providers show what they are doing on their resource's line in the
Pulumi CLI (:mod:`amdfleet.providers.progress`); each resource receives its own URN as
the ``resource_urn`` input for that, which no diff compares.
"""
