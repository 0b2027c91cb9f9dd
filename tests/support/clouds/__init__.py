"""Local HTTP servers implementing the documented APIs of the clouds amdfleet rents from."""
