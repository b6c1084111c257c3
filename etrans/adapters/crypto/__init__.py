"""Encryption at rest (cryptography): the SMTP credential cache format and DKIM private keys."""
