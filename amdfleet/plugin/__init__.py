"""``pulumi-resource-amdfleet``: the provider plugin that serves every amdfleet resource.

The Pulumi engine starts it for the package ``amdfleet`` (types ``amdfleet:index:*``),
finding the executable through the project's ``plugins.providers`` entry or on ``$PATH``;
pip installs it with amdfleet as a console script. It is written on the Pulumi SDK's
provider interface (:mod:`pulumi.provider.experimental`):

* :mod:`~amdfleet.plugin.registry` -- which provider class serves which type;
* :mod:`~amdfleet.plugin.values` -- property values between the wire and providers;
* :mod:`~amdfleet.plugin.provider` -- :class:`~amdfleet.plugin.provider.AmdFleetProvider`,
  the one Provider that dispatches each call to its resource's provider class;
* :mod:`~amdfleet.plugin.server` -- the gRPC server: many calls at once, amdfleet errors
  without a Python stack, ``delete`` seeing the last inputs.
"""
