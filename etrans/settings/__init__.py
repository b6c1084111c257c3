"""Environment -> frozen, validated settings, one type per subcommand.

Variable names are the contract of ``shared/spec/system-overview.md``: an operator can point one of
our processes at the environment of the process it replaces.  Nothing here does I/O at import time.

``for_command(name, env)`` reads what that subcommand needs (:mod:`.commands`: ``ServeSettings``,
``SendmailSettings``, ...); every missing or invalid variable is collected, and one ``ConfigError``
lists them all.  The sections are :mod:`.models`, the reading of variables :mod:`.reader`, the
checks beyond type and range :mod:`.validations`.
"""

from etrans.errors import ConfigError
from etrans.settings.commands import (
    COMMANDS,
    LOCAL_TOPICS,
    DbSettings,
    DevSettings,
    DlqSettings,
    FetchlogSettings,
    SendmailSettings,
    ServeSettings,
    Settings,
    WebhooksSettings,
    for_command,
    read_section,
)
from etrans.settings.models import (
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_STORE_EVENT_TYPES,
    KAFKA_CONF_PREFIX,
    RECORD_FRAMING_BYTES,
    ApiDatabases,
    Consumer,
    DatabaseSettings,
    DkimKeyStore,
    FetchlogOptions,
    HttpSettings,
    KafkaSettings,
    MongoSettings,
    OutboxSettings,
    RedisSettings,
    Secret,
    SendmailOptions,
    SmtpSettings,
    TokenSettings,
    redact_uri,
)
from etrans.settings.reader import read_env_file
from etrans.settings.validations import default_group_instance_id, is_loopback_host
from etrans.settings.webhooks import WebhooksOptions

__all__ = [
    "COMMANDS", "DEFAULT_MAX_RECORD_BYTES", "DEFAULT_STORE_EVENT_TYPES", "KAFKA_CONF_PREFIX",
    "LOCAL_TOPICS", "RECORD_FRAMING_BYTES", "ApiDatabases", "ConfigError", "Consumer",
    "DatabaseSettings", "DbSettings", "DevSettings", "DkimKeyStore", "DlqSettings",
    "FetchlogOptions",
    "FetchlogSettings", "HttpSettings", "KafkaSettings", "MongoSettings", "OutboxSettings",
    "RedisSettings", "Secret",
    "SendmailOptions", "SendmailSettings", "ServeSettings", "Settings", "SmtpSettings",
    "TokenSettings", "WebhooksOptions", "WebhooksSettings", "default_group_instance_id",
    "for_command", "is_loopback_host",
    "read_env_file", "read_section", "redact_uri",
]
