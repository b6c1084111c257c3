"""Database fixtures (usend_db_url, billing_db): placeholder, filled by the SQL engineer."""
