"""Suite-wide configuration: the real-service fixtures come from the harness plugins."""

pytest_plugins = ["tests.harness.services", "tests.harness.databases", "tests.harness.dns",
                  "tests.harness.smtp"]
