"""Cloud APIs that rent AMD Instinct GPUs: one thin httpx client per cloud, behind
:class:`amdfleet.clouds.api.CloudAPI`."""
