"""Local HTTP servers implementing cloud APIs as documented, for the cloud client tests."""
