"""etrans: self-hosted transactional email (HTTP API, SMTP sender, delivery-log ingester)."""

__version__ = "0.1.0"
