"""The one list of expected failures: (scenario, client) -> the honest reason it cannot pass yet.

A listed cell that fails shows as XFAIL; one that passes shows as XPASS, and with --strict (as CI
runs it) an XPASS fails the run so that this list never claims more than is true.
"""

EXPECTED_FAILURES: dict[tuple[str, str], str] = {
}
