"""amdfleet's resources and their providers, one module per resource.

Each module defines a props model (:class:`~amdfleet.providers.props.ProviderProps`), a
provider class (create, read, diff, update, delete) and the resource class programs
declare (an :class:`~amdfleet.providers.resource.AmdFleetResource`, Pulumi type
``amdfleet:index:<Name>``). The provider plugin ``pulumi-resource-amdfleet``
(:mod:`amdfleet.plugin`) serves every provider; programs only register resources.

Every provider is stateless: one instance serves every call of its type, many threads at
once, so it holds no client, connection or secret and never mutates ``self``.
Connections are opened inside each method and every remote call has a timeout.
``create`` is all-or-nothing (it cleans up what it made before raising), ``delete`` is
idempotent, and ``read`` re-collects what the resource observes so ``pulumi refresh``
shows drift.

The props model is used on both sides: the components build it, the resource turns it
into its inputs, and every provider method that acts parses its properties into it once.

While they work, providers show what they are doing on their resource's line in the
Pulumi CLI (:mod:`amdfleet.providers.progress`); the plugin gives each call its
resource's URN as the ``resource_urn`` property for that.
"""
