"""etrans test suite: unit/, integration/ and e2e/ against real servers (see tests/harness)."""
